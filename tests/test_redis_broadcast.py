"""The helpers of tornadio.redis_broadcast that need no Redis: stopping tasks.

A backend's connection task is stopped with ``cancel()``; on Python 3.9-3.11
``asyncio.wait_for`` drops a cancellation that arrives in the loop turn its
awaited call completes in, and the task goes on. That hung a chatroom process
after SIGTERM (its relay's heartbeat loop kept beating). These tests make the
cancellation get lost the way it does there and check the task still ends.
"""
import asyncio
import sys

import pytest

from tornadio.redis_broadcast import cancel_and_wait, stop_task

WAIT_FOR_DROPS_CANCEL = sys.version_info < (3, 12)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def _beats(replies, beaten):
    """A heartbeat loop as the backends write it: one bounded command per beat."""
    while True:
        reply = asyncio.get_running_loop().create_future()
        replies.append(reply)
        await asyncio.wait_for(reply, 10.0)
        beaten.append(reply.result())


async def _start_beats():
    replies, beaten = [], []
    task = asyncio.ensure_future(_beats(replies, beaten))
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(replies) == 1
    return task, replies, beaten


def _cancel_as_reply_arrives(task, replies):
    """The reply and the cancel in one loop turn: what loses the cancellation."""
    replies[-1].set_result("OK")
    task.cancel()


@pytest.mark.skipif(not WAIT_FOR_DROPS_CANCEL, reason="asyncio.wait_for keeps the "
                        "cancellation since Python 3.12")
def test_one_cancel_is_lost_when_the_reply_arrives_in_the_same_turn():
    async def body():
        task, replies, beaten = await _start_beats()
        _cancel_as_reply_arrives(task, replies)
        done, _ = await asyncio.wait({task}, timeout=0.3)
        assert not done, "the task ended: wait_for kept the cancellation"
        assert beaten == ["OK"] and len(replies) == 2  # it went on to the next beat
        assert await cancel_and_wait([task], timeout=2.0)

    run(body())


def test_cancel_and_wait_ends_a_task_whose_cancel_was_lost():
    async def body():
        task, replies, _ = await _start_beats()
        replies[-1].set_result("OK")
        stopping = asyncio.ensure_future(cancel_and_wait([task], timeout=2.0))
        # The first cancel lands with the reply; the repeated one ends the task.
        assert await asyncio.wait_for(stopping, 3.0) is True
        assert task.cancelled()

    run(body())


def test_a_task_that_ignores_every_cancel_is_given_up_on(caplog):
    async def body():
        release = asyncio.Event()

        async def stubborn():
            while not release.is_set():
                try:
                    await asyncio.sleep(1.0)
                except asyncio.CancelledError:
                    pass

        task = asyncio.ensure_future(stubborn())
        await asyncio.sleep(0)
        assert await asyncio.wait_for(cancel_and_wait([task], timeout=0.5), 5.0) is False
        assert "still running 0.5 s after being cancelled" in caplog.text
        release.set()
        task.cancel()
        await asyncio.wait({task}, timeout=2.0)

    run(body())


def test_stop_task_waits_for_a_task_of_its_loop():
    async def body():
        task, replies, _ = await _start_beats()
        replies[-1].set_result("OK")
        await asyncio.wait_for(stop_task(task, same_loop=True), 3.0)
        assert task.done()

    run(body())


def test_stop_task_reports_nothing_for_a_task_that_failed_on_its_way_out(caplog):
    async def body():
        async def fails_when_cancelled():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                raise ConnectionError("the connection broke while closing") from None

        task = asyncio.ensure_future(fails_when_cancelled())
        await asyncio.sleep(0)
        await asyncio.wait_for(stop_task(task, same_loop=True), 3.0)
        assert isinstance(task.exception(), ConnectionError)
        del task
        assert "never retrieved" not in caplog.text

    run(body())


def test_a_task_unwinding_on_its_own_is_not_cancelled_again():
    """Closing connections after a cancel takes a moment: that clean-up runs whole."""
    async def body():
        cleaned = []

        async def closes_its_connection():
            try:
                await asyncio.sleep(10)
            finally:
                await asyncio.sleep(0.3)  # as an aclose() bounded by its own timeout
                cleaned.append(True)

        task = asyncio.ensure_future(closes_its_connection())
        await asyncio.sleep(0)
        assert await cancel_and_wait([task], timeout=3.0) is True
        assert cleaned == [True]

    run(body())
