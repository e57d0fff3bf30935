"""The FastAGI wire: a sans-IO protocol core, a typed session API and an asyncio server."""

from fastagi.agi.errors import (
    AgiCommandFailure,
    AgiDeadChannel,
    AgiError,
    AgiHangup,
    AgiInvalidCommand,
    AgiProtocolError,
    AgiTimeout,
    AgiUsageError,
)
from fastagi.agi.protocol import (
    NEED_DATA,
    AgiConnection,
    ConnectionClosed,
    ConnectionState,
    Environment,
    Event,
    HangupNotice,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    Reply,
    UsageReply,
    encode_command,
)
from fastagi.agi.server import AgiServer, Flow
from fastagi.agi.session import (
    AgiEnvironment,
    AgiSession,
    DigitsResult,
)

__all__ = [
    "NEED_DATA",
    "AgiCommandFailure",
    "AgiConnection",
    "AgiDeadChannel",
    "AgiEnvironment",
    "AgiError",
    "AgiHangup",
    "AgiInvalidCommand",
    "AgiProtocolError",
    "AgiServer",
    "AgiSession",
    "AgiTimeout",
    "AgiUsageError",
    "ConnectionClosed",
    "ConnectionState",
    "DigitsResult",
    "Environment",
    "Event",
    "Flow",
    "HangupNotice",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "Reply",
    "UsageReply",
    "encode_command",
]
