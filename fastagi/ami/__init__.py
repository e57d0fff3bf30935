"""Our small interface to the Asterisk Manager Interface (panoramisk stays behind it)."""

from fastagi.ami.client import (
    DEVICE_STATES,
    AmiClient,
    ConnectionState,
    EventCallback,
    EventStream,
    OriginateReason,
    OriginateResult,
    ReconnectHook,
)
from fastagi.ami.errors import (
    AmiActionError,
    AmiAuthError,
    AmiConnectionLost,
    AmiError,
    AmiProtocolError,
    AmiTimeout,
    AmiValueError,
)
from fastagi.ami.message import Message

__all__ = [
    "DEVICE_STATES",
    "AmiActionError",
    "AmiAuthError",
    "AmiClient",
    "AmiConnectionLost",
    "AmiError",
    "AmiProtocolError",
    "AmiTimeout",
    "AmiValueError",
    "ConnectionState",
    "EventCallback",
    "EventStream",
    "Message",
    "OriginateReason",
    "OriginateResult",
    "ReconnectHook",
]
