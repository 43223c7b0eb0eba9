"""The client files under the resource: socket.io.js and the Flash polyfill's SWF files.

The 0.6 client loads WebSocketMain.swf from
/socket.io/lib/vendor/web-socket-js/WebSocketMain.swf unless the page sets
WEB_SOCKET_SWF_LOCATION; the reference server also answers /socket.io/WebSocketMain.swf.
"""
import os
import zipfile

import pytest

import tornadio
from tornadio import client
from support.apps import client_js_path
from support.wire import Events, echo_connection, fetch, run, serve

SWF_TYPE = "application/x-shockwave-flash"


def npm_swf_dir():
    return os.path.join(os.path.dirname(client_js_path()), "lib", "vendor", "web-socket-js")


def npm_bytes(name):
    directory = npm_swf_dir()
    if name == "WebSocketMainInsecure.swf":  # the package ships it zipped
        with zipfile.ZipFile(os.path.join(directory, "WebSocketMainInsecure.zip")) as archive:
            return archive.read(name)
    with open(os.path.join(directory, name), "rb") as handle:
        return handle.read()


@pytest.mark.parametrize("name", ["WebSocketMain.swf", "WebSocketMainInsecure.swf"])
def test_swf_served_from_the_npm_package_at_both_urls_with_etag(name):
    expected = npm_bytes(name)
    assert expected[:3] in (b"FWS", b"CWS", b"ZWS")  # a SWF header, not a zip or a stub

    async def body():
        async with serve(echo_connection(Events()), {"client_js": client_js_path()}) as (base, _):
            etags = set()
            for path in ("/socket.io/lib/vendor/web-socket-js/" + name, "/socket.io/" + name):
                first = await fetch(base + path)
                assert first.code == 200
                assert first.body == expected
                assert first.headers["Content-Type"] == SWF_TYPE
                assert int(first.headers["Content-Length"]) == len(expected)
                assert "max-age" in first.headers["Cache-Control"]
                etag = first.headers["ETag"]
                etags.add(etag)
                again = await fetch(base + path, headers={"If-None-Match": etag})
                assert again.code == 304 and again.body == b""
                stale = await fetch(base + path, headers={"If-None-Match": '"other"'})
                assert stale.code == 200 and stale.body == expected
            assert len(etags) == 1  # one file, one validator, whichever URL
            script = await fetch(base + "/socket.io/socket.io.js")
            assert script.code == 200 and b"WEB_SOCKET_SWF_LOCATION" in script.body
    run(body())


def test_swf_follows_the_resource_and_other_paths_stay_404():
    async def body():
        async with serve(echo_connection(Events()), {"client_js": client_js_path()},
                         resource="chat") as (base, _):
            assert (await fetch(base + "/chat/lib/vendor/web-socket-js/WebSocketMain.swf")).code == 200
            assert (await fetch(base + "/chat/WebSocketMain.swf")).code == 200
            for path in ("/socket.io/WebSocketMain.swf", "/chat/lib/vendor/web-socket-js/web_socket.js",
                         "/chat/lib/vendor/WebSocketMain.swf", "/chat/WebSocketMain.swf/x",
                         "/chat/lib/vendor/web-socket-js/../../../socket.io.js"):
                assert (await fetch(base + path)).code == 404, path
            # The transports are untouched by the new paths.
            assert (await fetch(base + "/chat/xhr-polling//1")).code == 200
    run(body())


def test_client_swf_setting_names_a_directory_or_turns_the_swf_off(tmp_path):
    (tmp_path / "WebSocketMain.swf").write_bytes(b"FWS own build")

    async def body():
        settings = {"client_js": client_js_path(), "client_swf": str(tmp_path)}
        async with serve(echo_connection(Events()), settings) as (base, _):
            own = await fetch(base + "/socket.io/WebSocketMain.swf")
            assert own.code == 200 and own.body == b"FWS own build"
            # No insecure build in that directory: not served.
            assert (await fetch(base + "/socket.io/WebSocketMainInsecure.swf")).code == 404
        async with serve(echo_connection(Events()), {"client_js": client_js_path(),
                                                     "client_swf": False}) as (base, _):
            assert (await fetch(base + "/socket.io/WebSocketMain.swf")).code == 404
            assert (await fetch(base + "/socket.io/socket.io.js")).code == 200
        async with serve(echo_connection(Events()), {"client_swf": npm_swf_dir()}) as (base, _):
            assert (await fetch(base + "/socket.io/WebSocketMain.swf")).code == 200
            assert (await fetch(base + "/socket.io/socket.io.js")).code == 404
    run(body())


def test_script_copied_alone_serves_no_swf_and_says_nothing_is_wrong(tmp_path):
    script = tmp_path / "socket.io.js"
    script.write_text("var io = {};")

    async def body():
        async with serve(echo_connection(Events()), {"client_js": str(script)}) as (base, _):
            assert (await fetch(base + "/socket.io/socket.io.js")).code == 200
            assert (await fetch(base + "/socket.io/WebSocketMain.swf")).code == 404
    run(body())


def test_configured_swf_directory_without_the_file_fails_at_get_router(tmp_path):
    with pytest.raises(client.ClientScriptMissing, match="client_swf.*npm install socket.io@0.6.18"):
        tornadio.get_router(echo_connection(Events()), {"client_swf": str(tmp_path)})
    with pytest.raises(ValueError, match="client_swf"):
        tornadio.get_router(echo_connection(Events()), {"client_swf": 5})


def test_damaged_insecure_zip_is_a_clear_error(tmp_path):
    (tmp_path / "WebSocketMain.swf").write_bytes(b"FWS")
    (tmp_path / "WebSocketMainInsecure.zip").write_bytes(b"not a zip")
    with pytest.raises(client.ClientScriptMissing, match="WebSocketMainInsecure"):
        tornadio.get_router(echo_connection(Events()), {"client_swf": str(tmp_path)})
