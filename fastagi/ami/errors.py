"""One exception per way an AMI call can fail, all under :class:`AmiError`.

No message built here ever contains a field value sent to Asterisk: the Login action
carries the manager secret, and the other values may be typed by administrators.
"""

from __future__ import annotations


class AmiError(Exception):
    """Base class of every AMI failure."""


class AmiAuthError(AmiError):
    """Asterisk refused the Login (wrong user name or secret, or an ACL ``deny``)."""


class AmiTimeout(AmiError, TimeoutError):
    """No answer in time: an action's response, a Ping's Pong, or a connect."""


class AmiConnectionLost(AmiError, ConnectionError):
    """There is no usable connection: refused, closed by Asterisk, or reset.

    Raised by actions sent while the client reconnects, and by actions that were in
    flight when the connection went away (an Originate may or may not have been placed).
    """


class AmiActionError(AmiError):
    """Asterisk answered ``Response: Error`` (main/manager.c ``astman_send_error``)."""

    def __init__(self, action: str, message: str) -> None:
        super().__init__(f"AMI {action} failed: {message or 'no reason given'}")
        self.action = action
        self.message = message


class AmiValueError(AmiError, ValueError):
    """A value we were asked to send would corrupt the action, so nothing was sent.

    CR or LF would end the header line and let the rest of the value inject fields
    (main/manager.c ``get_input`` ends a line at LF as well as at CRLF).
    """


class AmiProtocolError(AmiError):
    """The peer sent something that is not AMI (bad banner, oversized message)."""
