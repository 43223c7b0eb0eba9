"""Packaging for TornadIO (minimal; the extras mirror what the tests need)."""
from setuptools import setup

setup(
    name="tornadio",
    version="1.0.0",
    description="Socket.IO 0.6 server for Tornado 6",
    packages=["tornadio"],
    # PEP 561: the package is typed (mypy --strict tornadio runs in the tests).
    package_data={"tornadio": ["py.typed"]},
    python_requires=">=3.9",
    install_requires=["tornado>=6"],
    extras_require={
        "simplejson": ["simplejson"],
        # tornadio.redis_broadcast: redis.asyncio with aclose(), first in 5.0.1.
        # scripts/setup.sh reads this floor: the Redis fault tests also run
        # under exactly that version (tests/scaling/test_redis_py_matrix.py).
        "redis": ["redis>=5.0.1"],
        "test": [
            "pytest",
            "hypothesis",
            "playwright",
            "websocket-client",
            "redis",
            "simplejson",
            "docutils",
            # scripts/docs and tests/test_docs.py; 7.4 brought the confval directive.
            "sphinx>=7.4",
            # tests/test_typing.py: mypy --strict tornadio.
            "mypy",
        ],
    },
)
