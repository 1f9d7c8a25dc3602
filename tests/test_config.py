"""connect(): where keys and URLs come from, paper/live/sandbox, guard settings, the default client
of the shortcuts, and the secret never showing anywhere."""

from __future__ import annotations

import logging
import pickle
import traceback

import pytest

import alpaca_nb as anb
from alpaca_nb._config import Secret, resolve
from alpaca_nb.sandbox import Sandbox

ENV = ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "APCA_API_BASE_URL", "APCA_API_DATA_URL",
       "APCA_API_STREAM_URL", "ALPACA_NB_ALLOW_LIVE", "ALPACA_NB_MAX_ORDER_NOTIONAL",
       "ALPACA_NB_MAX_ORDER_QTY", "ALPACA_NB_PRICE_COLLAR")


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALPACA_NB_CACHE_DIR", str(tmp_path / "cache"))


def test_no_keys_means_the_embedded_sandbox_with_a_notice(caplog):
    with caplog.at_level(logging.WARNING, logger="alpaca_nb"):
        api = anb.connect()
    assert api.mode == "sandbox"
    assert any("embedded sandbox" in r.getMessage() for r in caplog.records)
    assert api.account()["status"] == "ACTIVE"             # it answers, with no keys configured
    assert anb.connect(sandbox=True).mode == "sandbox"


def test_keys_from_the_environment(sandbox, account, monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", account.key_id)
    monkeypatch.setenv("APCA_API_SECRET_KEY", account.secret_key)
    monkeypatch.setenv("APCA_API_BASE_URL", account.url + "/v2")
    api = anb.connect()
    assert api.mode == "sandbox"                            # a loopback server
    assert api.settings.base_url == account.url and api.settings.data_url == account.url
    assert api.account()["id"] == account.account_id


def test_paper_by_default_and_data_url():
    settings = resolve(key_id="PKTEST", secret_key="s3cr3t", env={})
    assert settings.mode == "paper"
    assert settings.base_url == "https://paper-api.alpaca.markets"
    assert settings.data_url == "https://data.alpaca.markets"
    assert settings.stream_url == "wss://stream.data.alpaca.markets"
    env = {"APCA_API_KEY_ID": "PK", "APCA_API_SECRET_KEY": "s", "APCA_API_DATA_URL": "https://data.sandbox.alpaca.markets"}
    assert resolve(env=env).data_url == "https://data.sandbox.alpaca.markets"


def test_live_needs_an_explicit_opt_in(monkeypatch):
    with pytest.raises(PermissionError, match="allow_live=True"):
        anb.connect(key_id="AK", secret_key="s", paper=False)
    with pytest.raises(PermissionError, match="paper=True"):
        anb.connect(key_id="AK", secret_key="s", base_url="https://api.alpaca.markets")
    assert anb.connect(key_id="AK", secret_key="s", paper=False, allow_live=True).mode == "live"
    monkeypatch.setenv("ALPACA_NB_ALLOW_LIVE", "1")
    live = anb.connect(key_id="AK", secret_key="s", paper=False)
    assert live.mode == "live" and live.settings.base_url == "https://api.alpaca.markets"


def test_half_a_key_pair_and_bad_settings_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="secret_key is missing"):
        anb.connect(key_id="PK")
    monkeypatch.setenv("APCA_API_KEY_ID", "PK")
    with pytest.raises(ValueError, match="APCA_API_SECRET_KEY is not set"):
        anb.connect()
    monkeypatch.delenv("APCA_API_KEY_ID")
    with pytest.raises(ValueError, match="retries"):
        anb.connect(sandbox=True, retries=0)
    with pytest.raises(ValueError, match="timeout"):
        anb.connect(sandbox=True, timeout=(1, -1))
    with pytest.raises(ValueError, match="feed must be one of"):
        anb.connect(sandbox=True, feed="nasdaq")
    with pytest.raises(ValueError, match="max_order_qty must be positive"):
        anb.connect(sandbox=True, max_order_qty=0)
    monkeypatch.setenv("ALPACA_NB_PRICE_COLLAR", "lots")
    with pytest.raises(ValueError, match="ALPACA_NB_PRICE_COLLAR='lots' is not a number"):
        anb.connect(sandbox=True)


def test_guard_settings_from_arguments_and_environment(monkeypatch):
    monkeypatch.setenv("ALPACA_NB_MAX_ORDER_NOTIONAL", "5000")
    monkeypatch.setenv("ALPACA_NB_PRICE_COLLAR", "off")
    api = anb.connect(sandbox=True, max_order_qty=7)
    assert (api.guard.max_order_notional, api.guard.max_order_qty, api.guard.price_collar) == (5000.0, 7.0, None)


def test_shortcuts_use_the_last_connection(account):
    api = anb.connect(base_url=account.url, data_url=account.url, key_id=account.key_id,
                      secret_key=account.secret_key)
    assert anb.default_client() is api
    assert anb.account()["id"] == account.account_id
    anb.buy("AAPL", 1)
    assert len(anb.orders(status="all")) == 1
    assert "symbols" in str(__import__("inspect").signature(anb.bars))
    assert anb.bars.__doc__ and "Historical bars" in anb.bars.__doc__


def test_public_face_is_explicit():
    for name in anb.__all__:
        assert hasattr(anb, name), name
    assert issubclass(anb.OrderValidationError, ValueError)
    assert issubclass(anb.PreTradeCheckError, anb.OrderValidationError)
    assert issubclass(anb.InsufficientBuyingPower, anb.ForbiddenError)


# ------------------------------------------------------------------ secrets

def _everything_about(api, exc: BaseException | None = None) -> str:
    parts = [repr(api), str(api), repr(api.settings), str(api.settings), repr(api._transport),
             repr(api._transport._session.auth), repr(api.settings.secret), f"{api.settings.secret}"]
    if exc is not None:
        parts += [str(exc), repr(exc), "".join(traceback.format_exception(exc)),
                  repr(getattr(exc, "body", "")), pickle.dumps(exc).decode("latin-1")]
    return "\n".join(parts)


def test_the_secret_never_shows(sandbox, caplog):
    secret = "s3cret-VALUE-never-shown-42"
    acct_keys = {"key_id": "PKSECRETTEST01", "secret_key": secret}
    import requests
    from conftest import admin_headers
    requests.post(f"{sandbox.url}/sandbox/accounts", json=acct_keys, headers=admin_headers(sandbox),
                  timeout=10).raise_for_status()
    with caplog.at_level(logging.DEBUG):
        api = anb.connect(base_url=sandbox.url, data_url=sandbox.url, **acct_keys)
        account = api.account()
        api.bars("AAPL", "1Min", "2024-01-02", "2024-01-02")
        order = api.buy("AAPL", 1)
        bad = anb.connect(base_url=sandbox.url, data_url=sandbox.url, key_id="PKSECRETTEST01",
                          secret_key=secret + "x")
        with pytest.raises(anb.AuthenticationError) as info:
            bad.account()
        with pytest.raises(anb.OrderValidationError) as invalid:
            api.buy("AAPL", -1)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert any(r.levelno == logging.DEBUG for r in caplog.records)     # there was DEBUG output
    assert "/v2/account" in logged
    for text in (logged, _everything_about(api), _everything_about(bad, info.value),
                 str(invalid.value), account.to_string(), order.to_string(),
                 pickle.dumps(account).decode("latin-1"), pickle.dumps(order).decode("latin-1")):
        assert secret not in text
    for obj in (api, api.settings, api.settings.secret, api._transport):
        with pytest.raises(TypeError, match="pickle"):
            pickle.dumps(obj)
    assert Secret(secret) == secret and repr(Secret(secret)) == "Secret('********')"


def test_sandbox_objects_do_not_show_the_secret():
    with Sandbox(secret_key="sandbox-private-secret") as sb:
        assert "sandbox-private-secret" not in repr(sb) + repr(sb.config)
        api = anb.connect(sandbox=sb)
        assert "sandbox-private-secret" not in _everything_about(api)


@pytest.mark.parametrize("secret", ["s3cret-VALUE\n", " s3cret-VALUE", "s3cret\x00VALUE", "s3cret VALUE"])
def test_a_key_copied_with_a_line_break_or_a_control_character_is_refused_unseen(sandbox, monkeypatch, secret):
    """requests would refuse the header quoting its value, and a server may echo it: the key is
    refused at connect(), and the message names the argument, never the value."""
    with pytest.raises(ValueError, match=r"^secret_key contains a space, a line break") as given:
        anb.connect(base_url=sandbox.url, data_url=sandbox.url, key_id="PKTEST", secret_key=secret)
    errors = [given.value]
    if "\x00" not in secret:                            # an environment cannot hold a NUL
        monkeypatch.setenv("APCA_API_KEY_ID", "PKTEST")
        monkeypatch.setenv("APCA_API_SECRET_KEY", secret)
        monkeypatch.setenv("APCA_API_BASE_URL", sandbox.url)
        with pytest.raises(ValueError, match=r"^APCA_API_SECRET_KEY contains a space") as from_env:
            anb.connect()
        errors.append(from_env.value)
    with pytest.raises(ValueError, match=r"^key_id contains a space"):
        anb.connect(base_url=sandbox.url, key_id="PK TEST", secret_key="fine")
    for exc in errors:
        assert "s3cret" not in str(exc) + repr(exc) + "".join(traceback.format_exception(exc))


def test_an_answer_that_echoes_the_secret_loses_it(caplog):
    """A server (or a proxy) quoting the request's headers in an error answer: the error, its body
    and the log show a mask instead of the secret."""
    import http.server
    import threading

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = ('{"code": 40010000, "message": "bad header APCA-API-SECRET-KEY: %s"}'
                    % self.headers["APCA-API-SECRET-KEY"]).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        secret = "echoed-s3cret-VALUE"
        api = anb.connect(base_url=url, data_url=url, key_id="PKTEST", secret_key=secret)
        with caplog.at_level(logging.DEBUG), pytest.raises(anb.AlpacaError) as info:
            api.account()
        assert info.value.message == "bad header APCA-API-SECRET-KEY: ********"
        assert secret not in _everything_about(api, info.value)
        assert secret not in "\n".join(r.getMessage() for r in caplog.records)
    finally:
        server.shutdown()
        server.server_close()
