"""One exception per outcome of an AGI command that a flow may want to tell apart.

Everything derives from :class:`AgiError`.  A flow that only cares whether the caller
is still there catches :class:`AgiHangup`, which also covers 511 (dead channel).
"""

from __future__ import annotations

from fastagi.agi.protocol import LocalProtocolError, ProtocolError, Reply

__all__ = [
    "AgiCommandFailure",
    "AgiDeadChannel",
    "AgiError",
    "AgiHangup",
    "AgiInvalidCommand",
    "AgiProtocolError",
    "AgiTimeout",
    "AgiUsageError",
]


class AgiError(Exception):
    """Base of every FastAGI error a flow can see."""

    def __init__(self, message: str, *, command: str | None = None) -> None:
        super().__init__(message)
        self.command = command


class AgiHangup(AgiError):
    """The caller is gone: a HANGUP notice, EOF from Asterisk, or a result of -1 that
    the command documents as "failure or hangup"."""


class AgiDeadChannel(AgiHangup):
    """511: the command is not permitted on a dead channel (the caller hung up)."""


class AgiInvalidCommand(AgiError):
    """510: Asterisk does not know the command."""


class AgiUsageError(AgiError):
    """520: the command's syntax was wrong.  ``usage`` is Asterisk's usage text."""

    def __init__(self, message: str, *, usage: str, command: str | None = None) -> None:
        super().__init__(message, command=command)
        self.usage = usage


class AgiCommandFailure(AgiError):
    """The command ran and failed in a way that is not a hangup (e.g. EXEC of an
    application that does not exist), or the reply code was unexpected."""

    def __init__(self, message: str, *, reply: Reply, command: str | None = None) -> None:
        super().__init__(message, command=command)
        self.reply = reply


class AgiTimeout(AgiError):
    """No environment, or no reply, within the configured time."""


class AgiProtocolError(AgiError):
    """The conversation broke the protocol; ``error`` is the core's exception, if any.

    ``local`` tells who broke it: True when we asked for something the wire cannot carry
    (a newline in an argument), False when Asterisk (or an impostor) sent garbage.
    """

    def __init__(
        self, message: str, *, error: ProtocolError | None = None, command: str | None = None
    ) -> None:
        super().__init__(message, command=command)
        self.error = error

    @property
    def local(self) -> bool:
        return isinstance(self.error, LocalProtocolError)
