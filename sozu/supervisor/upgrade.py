"""Main upgrade (`UpgradeMain`): hand the command socket, workers, listeners and state to a new
main process started from the `sozu` installed on disk (Sōzu's handshake, SOZU-FACTS.md).

Stub until the main-upgrade slice lands: refuses, audited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sozu.command.proto import Request
from sozu.supervisor.audit import ERROR_OTHER, RESULT_ERR
from sozu.supervisor.audit_trail import AuditTrail

if TYPE_CHECKING:
    from sozu.supervisor.server import Supervisor
    from sozu.supervisor.sessions import ClientSession


async def upgrade_main(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    """Answer an `UpgradeMain` request; True while the client session goes on."""
    message = "main process upgrade is not supported yet"
    AuditTrail.of(sup, session, request).record(RESULT_ERR, error_code=ERROR_OTHER, reason=message)
    await session.failure(message)
    return True
