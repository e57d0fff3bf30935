"""The person at a test phone: which AMI events are prompts, and when each answer goes.

The events are as Asterisk 22 sends them (``AGIExecStart`` carries the command line the
server wrote, quoting included).
"""

from __future__ import annotations

import pytest

from fastagi_dev.sandbox.keypad import (
    HANG_UP,
    Person,
    Prompt,
    key_read_on,
    keypad_request,
    prompt_started,
)

CHANNEL = "PJSIP/101-00000004"


def agi(command: str) -> dict[str, str]:
    return {"Event": "AGIExecStart", "Channel": CHANNEL, "Command": command, "CommandId": "7"}


def app(application: str) -> dict[str, str]:
    return {"Event": "Newexten", "Channel": CHANNEL, "Application": application, "AppData": ""}


READS = Prompt(CHANNEL, "GET DATA x", reads_keys=True)
PLAYS = Prompt(CHANNEL, "Playback", reads_keys=False)


@pytest.mark.parametrize(
    ("event", "reads_keys"),
    [
        (agi("GET DATA /fastagi/sounds/tts-0a1b 5000 1"), True),
        (agi("GET DATA digits/1 5000 1"), True),
        (agi('STREAM FILE vm-Urgent "0123456789*#"'), True),
        (agi("STREAM FILE vm-Urgent 0123456789*#"), True),
        (agi('STREAM FILE beep ""'), False),
        (agi("STREAM FILE beep"), False),
        (agi('CONTROL STREAM FILE beep "1"'), True),
        (agi("SAY DIGITS 101 #"), True),
        (agi('EXEC Playback "custom/thanks"'), False),
        (agi("EXEC Read X,beep,1"), True),
        (app("Read"), True),
        (app("Playback"), False),
        (app("SayDigits"), False),
    ],
)
def test_prompts_and_whether_they_read_keys(event: dict[str, str], reads_keys: bool) -> None:
    prompt = prompt_started(event)
    assert prompt is not None
    assert (prompt.channel, prompt.reads_keys) == (CHANNEL, reads_keys)


@pytest.mark.parametrize(
    "event",
    [
        agi("SET VARIABLE FASTAGI_STATUS CONFIRMED"),
        agi("EXEC SendText"),
        agi('GET DATA "unterminated'),
        app("Answer"),
        app("AGI"),
        {"Event": "AGIExecEnd", "Channel": CHANNEL, "Command": "GET DATA x 5000 1"},
        {"Event": "VarSet", "Channel": CHANNEL},
    ],
)
def test_no_prompt(event: dict[str, str]) -> None:
    assert prompt_started(event) is None


def test_wait_for_digit_listens_and_plays_nothing() -> None:
    prompt = prompt_started(agi("WAIT FOR DIGIT 250"))
    assert prompt == Prompt(CHANNEL, "WAIT FOR DIGIT 250", reads_keys=True, plays=False)


def test_a_person_does_not_answer_silence_unless_answering_before_the_prompt() -> None:
    listening = Prompt(CHANNEL, "WAIT FOR DIGIT 250", reads_keys=True, plays=False)
    patient = Person(["1"], hang_up=True)
    assert patient.hears(listening) is None
    assert patient.hears(READS) == "1"
    patient.key_read()
    assert patient.hears(listening) is None  # no hanging up on silence either
    eager = Person(["1", "2"], before_prompt=True)
    assert eager.hears(listening) == "1"
    eager.key_read()
    assert eager.hears(listening) is None  # the first answer only
    assert eager.hears(READS) == "2"


def test_a_key_read_is_a_received_dtmf_end() -> None:
    assert key_read_on({"Event": "DTMFEnd", "Channel": CHANNEL, "Direction": "Received"}) == (
        CHANNEL
    )
    assert key_read_on({"Event": "DTMFEnd", "Channel": CHANNEL, "Direction": "Sent"}) is None
    assert key_read_on({"Event": "DTMFBegin", "Channel": CHANNEL, "Direction": "Received"}) is None


def test_answers_go_one_per_prompt_that_reads_keys() -> None:
    person = Person(["99#", "1234#"])
    assert person.hears(PLAYS) is None  # a prompt that drops keys is only listened to
    assert person.hears(READS) == "99#"
    assert person.untyped == ("1234#",)


def test_the_next_answer_waits_until_asterisk_has_read_every_key_of_the_last() -> None:
    person = Person(["7", "1"])
    assert person.hears(READS) == "7"
    # The fallback question is three files: the second starts before "7" was read, and
    # "1" typed now would be read by it too, or dropped between commands.
    assert person.hears(READS) is None
    person.key_read()
    assert person.hears(READS) == "1"
    assert person.untyped == ()


def test_several_keys_are_all_read_before_the_next_answer() -> None:
    person = Person(["12#", "9"])
    assert person.hears(READS) == "12#"
    person.key_read()
    person.key_read()
    assert person.hears(READS) is None
    person.key_read()
    assert person.hears(READS) == "9"


def test_an_empty_answer_stays_silent_at_one_prompt() -> None:
    person = Person(["", "1"])
    assert person.hears(READS) is None
    assert person.hears(READS) == "1"


def test_hanging_up_comes_at_the_next_prompt_after_the_answers() -> None:
    person = Person(["1"], hang_up=True)
    assert person.hears(READS) == "1"
    assert person.untyped == ("hang up",)
    person.key_read()
    assert person.hears(PLAYS) == HANG_UP
    assert not person.untyped
    assert person.hears(READS) is None  # once


def test_hanging_up_at_the_first_prompt_of_any_kind() -> None:
    person = Person([], hang_up=True)
    assert person.hears(PLAYS) == HANG_UP


@pytest.mark.parametrize("answer", ["123456789", "1\r\n", "x", "1 2"])
def test_what_a_phone_cannot_type_is_refused(answer: str) -> None:
    with pytest.raises(ValueError, match="an answer is"):
        Person([answer])


def test_the_keypad_request_names_the_call_and_the_keys() -> None:
    request = keypad_request(
        "keypad-0a1b@127.0.0.1", "1234#", phone_port=6101, own_port=40000, seq=3
    ).decode()
    lines = request.split("\r\n")
    assert lines[0] == "KEYPAD sip:phone@127.0.0.1:6101 SIP/2.0"
    assert "Call-ID: keypad-0a1b@127.0.0.1" in lines
    assert "CSeq: 3 KEYPAD" in lines
    assert "Keys: 1234#" in lines
    assert "Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-keypad-3" in lines
    assert request.endswith("Content-Length: 0\r\n\r\n")


def test_the_hang_up_request_has_no_keys() -> None:
    request = keypad_request("c@127.0.0.1", HANG_UP, phone_port=6101, own_port=1, seq=1)
    assert request.startswith(b"HANGUP sip:phone@127.0.0.1:6101 SIP/2.0\r\n")
    assert b"Keys:" not in request


@pytest.mark.parametrize(
    ("call_id", "keys"), [("c@127.0.0.1", ""), ("c@127.0.0.1", "1x"), ("c\r\nX: 1", "1")]
)
def test_a_request_that_could_not_be_read_right_is_refused(call_id: str, keys: str) -> None:
    with pytest.raises(ValueError, match=r"not keys a phone can type|CR or LF"):
        keypad_request(call_id, keys, phone_port=6101, own_port=1, seq=1)
