"""The audit lines of one client request (attempt, completion) sharing one request ULID."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sozu.command.proto import Request
from sozu.supervisor.audit import (
    RESULT_ERR,
    RESULT_OK,
    AuditSubject,
    FanOut,
    describe,
    new_ulid,
    request_sha256,
)

if TYPE_CHECKING:
    from sozu.supervisor.gathering import Gathered
    from sozu.supervisor.server import Supervisor
    from sozu.supervisor.sessions import ClientSession


class AuditTrail:
    """The audit lines of one request: same session, same request ULID, same subject."""

    def __init__(
        self, sup: Supervisor, session: ClientSession | None, subject: AuditSubject | None,
        request: Request | None = None,
    ) -> None:  # fmt: skip
        self.sup = sup
        self.session = session
        self.subject = subject
        self.request_ulid = new_ulid()
        self.sha = request_sha256(request) if request is not None else None
        self.started = time.monotonic()

    @classmethod
    def of(cls, sup: Supervisor, session: ClientSession, request: Request) -> AuditTrail:
        """Describe `request` against the state as it is now (before any change)."""
        subject = describe(
            request,
            sup.state,
            client_id=session.client_id,
            config_path=str(sup.config.config_path),
            boot_generation=sup.audit.boot_generation,
        )
        return cls(sup, session, subject, request)

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def record(
        self,
        result: str,
        *,
        error_code: str | None = None,
        reason: str | None = None,
        fanout: FanOut | None = None,
        elapsed: bool = True,
        target: str | None = None,
    ) -> None:
        if self.subject is None:
            return
        subject = self.subject if target is None else self.subject.with_target(target)
        self.sup.audit.record(
            self.session.context if self.session is not None else None,
            subject,
            request_ulid=self.request_ulid,
            result=result,
            error_code=error_code,
            reason=reason,
            elapsed_ms=self.elapsed_ms() if elapsed else None,
            fanout=fanout,
            request_sha256=self.sha,
        )

    def attempt(self) -> None:
        """Accepted by the main state; the workers have not answered yet."""
        self.record(RESULT_OK, elapsed=False)

    def completion(self, gathered: Gathered) -> None:
        if gathered.succeeded:
            self.record(RESULT_OK, fanout=gathered.fanout())
        else:
            self.record(
                RESULT_ERR,
                fanout=gathered.fanout(),
                error_code=gathered.error_code(),
                reason=gathered.failure_message(),
            )
