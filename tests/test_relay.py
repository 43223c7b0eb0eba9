"""tornadio.relay and tornadio.redis_relay in one process: what needs no second one.

Ids, the setting and its validation, and that a router without the setting
is the router it always was. The relay between processes is tested for real
in tests/scaling/test_relay_nodes.py (three processes, redis-server) and
tests/examples/test_chatroom_relay.py (nginx, Chromium).
"""
import asyncio

import pytest

import tornadio
from tornadio import session as sessions
from tornadio.relay import TAG_LENGTH, RelayBackend, owner_tag
from tornadio.router import DEFAULT_SETTINGS

from support.wire import fetch, open_xhr, run, serve


class Quiet(tornadio.SocketConnection):
    def on_message(self, message):
        self.send(message)


def test_ids_carry_the_owner_tag_at_the_end():
    plain = sessions.generate_session_id()
    assert owner_tag(plain) is None
    assert owner_tag(plain + "0123456789") == "0123456789"
    assert owner_tag(plain + "012345678Z") is None  # not hex: not one of ours
    assert owner_tag(plain + "01234") is None
    assert TAG_LENGTH == 10 and len(plain) + TAG_LENGTH <= 64  # fits the id pattern


def test_the_setting_takes_relay_backends_only():
    with pytest.raises(ValueError, match="session_relay"):
        tornadio.get_router(Quiet, {"session_relay": object()})
    with pytest.raises(ValueError, match="session_relay"):
        tornadio.get_router(Quiet, {"session_relay": RelayBackend})  # the class itself
    router = tornadio.get_router(Quiet, {"session_relay": None})
    assert router.relay is None


def test_redis_relay_checks_its_settings():
    redis_relay = pytest.importorskip("tornadio.redis_relay")
    backend = redis_relay.RedisSessionRelay(url="redis://127.0.0.1:1/0")
    tornadio.get_router(Quiet, {"session_relay": backend})  # accepted; connects lazily
    for bad in ({"prefix": ""}, {"ack_timeout": 0}, {"alive_ttl": -1}, {"reply_timeout": True},
                {"min_backoff": 2, "max_backoff": 1}, {"max_batch": 0}):
        with pytest.raises(ValueError):
            redis_relay.RedisSessionRelay(**bad)


def test_without_the_setting_nothing_changes():
    """Plain 32-character ids; an id that names another process is just unknown."""
    assert DEFAULT_SETTINGS["session_relay"] is None

    async def test():
        async with serve(Quiet) as (base, router):
            sid, _ = await open_xhr(base)
            assert len(sid) == 32 and router.relay is None
            response = await fetch("%s/socket.io/xhr-polling/%s0123456789/1" % (base, sid))
            assert response.code == 401
            assert router.stats()["relay"] is None

    run(test())


def test_requeued_frames_go_out_first():
    container = sessions.SessionContainer()
    session = sessions.Session(container, Quiet, "xhr-polling", None, DEFAULT_SETTINGS)
    container.add(session)

    class Sink:
        once = True

        def __init__(self):
            self.got = []

        def write_payload(self, payload):
            self.got.append(payload)

        def end(self):
            pass

    async def test():
        await session.open(None, (), {})
        session.attach(Sink())  # takes the id frame
        session.send("newer")
        session.requeue(tornadio.proto.encode("older"))
        assert session.queued_bytes == len("~m~5~m~newer~m~5~m~older")
        sink = Sink()
        session.attach(sink)
        assert sink.got == ["~m~5~m~older~m~5~m~newer"]
        session.close()
        session.requeue("~m~4~m~late")  # a closed session takes nothing back
        assert not session.has_leftovers

    asyncio.run(test())
