"""Worker upgrade (`UpgradeWorker N`): a new worker with the same listeners and the current
state takes over, then worker N soft-stops; answered once it has stopped.

Stub until the worker-upgrade slice lands: refuses, audited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sozu.command.proto import Request
from sozu.supervisor.audit import ERROR_OTHER, RESULT_ERR
from sozu.supervisor.audit_trail import AuditTrail

if TYPE_CHECKING:
    from sozu.supervisor.server import Supervisor
    from sozu.supervisor.sessions import ClientSession


async def upgrade_worker(sup: Supervisor, session: ClientSession, request: Request) -> bool:
    """Answer an `UpgradeWorker` request; True while the client session goes on."""
    message = "worker upgrade is not supported yet"
    AuditTrail.of(sup, session, request).record(RESULT_ERR, error_code=ERROR_OTHER, reason=message)
    await session.failure(message)
    return True
