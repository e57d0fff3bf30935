"""Reading SIPp's message log: a retransmitted request is one message, not two pages."""

from __future__ import annotations

from fastagi_dev.sandbox.sipp import first_arrivals, parse_messages


def entry(time: str, text: str, *, received: bool = True) -> str:
    how = "UDP message received [100] bytes :" if received else "UDP message sent (100 bytes):"
    return f"----------------------------------------------- 2026-11-27 {time}\n{how}\n\n{text}\n\n"


def request(method: str, cseq: int, branch: str, call_id: str = "a@127.0.0.1") -> str:
    return (
        f"{method} sip:201@127.0.0.1:5201 SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;rport;branch={branch}\n"
        f"Call-ID: {call_id}\n"
        f"CSeq: {cseq} {method}\n"
        "Content-Length:  0"
    )


def test_a_retransmitted_bye_is_one_bye_and_two_invites_are_two() -> None:
    log = "".join(
        [
            entry("15:17:00.000000", request("INVITE", 1, "z9hG4bK-1")),
            entry("15:17:00.100000", "SIP/2.0 200 OK\nCall-ID: a@127.0.0.1", received=False),
            entry("15:17:06.000000", request("BYE", 2, "z9hG4bK-2")),
            # The 200 to the BYE came late: Asterisk sent it again after Timer E (500 ms).
            entry("15:17:06.500000", request("BYE", 2, "z9hG4bK-2")),
            # The next page: a new dialog, a new transaction.
            entry("15:17:10.000000", request("INVITE", 1, "z9hG4bK-3", call_id="b@127.0.0.1")),
        ]
    )
    messages = parse_messages(log)

    firsts = first_arrivals(messages)

    assert len(messages) == 5
    assert [m.first_line.split()[0] for m in firsts if m.received] == ["INVITE", "BYE", "INVITE"]
    assert [m.time.second for m in firsts if m.received] == [0, 6, 10]  # the first copy
    assert messages[2].header("call-id", "i") == "a@127.0.0.1"
    assert messages[2].transaction == (
        "BYE sip:201@127.0.0.1:5201 SIP/2.0",
        "a@127.0.0.1",
        "2 BYE",
        "z9hG4bK-2",
    )
