"""The seed's journey end to end, in a real browser (docs/integrations.md, "The journey in a
browser"): headless Chromium reads the docs of ``examples/webapp.py`` anonymously, signs up and
creates an API key; an API client calls the API with that key; one profile then holds the
browser's anonymous id, the user id and the key. A second user on the same browser, first
without a logout and then with one, gets the seed's R3 results (docs/merge-rules.md).

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them when missing).
"""

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

import identityres as ir
from identityres.integrations.wsgi import api_key_identifier
from tests.test_integrations_servers import ROOT, free_port, gunicorn, running

pytestmark = pytest.mark.slow

SECRET = "browser-journey-secret-0123456789"


def chrome() -> object:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.fail(
            "the browser journey needs Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver; .ci/run installs them)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium fetch a driver
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


WAIT = 60  # seconds: CI runs this while the machine is busy with other tests


def find(driver: object, element_id: str) -> Any:
    """The element with this id, waiting for it: a page loads in its own time."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    return WebDriverWait(driver, WAIT).until(  # type: ignore[arg-type]
        expected_conditions.presence_of_element_located((By.ID, element_id))
    )


def click(driver: object, element_id: str) -> None:
    """Click a link or a form's button and wait until the page it leads to has replaced this
    one: without the wait, the next lookup can run on the old page (a CI run saw it find the
    sign-up form where the account page should have been)."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    element = find(driver, element_id)
    element.click()
    WebDriverWait(driver, WAIT).until(expected_conditions.staleness_of(element))  # type: ignore[arg-type]


def fill(driver: object, base: str, path: str, name: str) -> None:
    driver.get(base + path)  # type: ignore[attr-defined]
    find(driver, "username").send_keys(name)
    find(driver, "password").send_keys(f"pw-{name}-123")
    click(driver, "submit")


def test_docs_signup_key_and_api_call_are_one_person_and_r3_holds(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "webapp.db"
    # threads: Chromium opens spare connections, which would hold a lone sync worker
    command = gunicorn(port, "webapp:app", "--threads", "4", "--chdir", str(ROOT / "examples"))
    env = {"WEBAPP_STORE": f"sqlite:///{db}", "WEBAPP_SECRET": SECRET, "PYTHONPATH": str(ROOT)}
    with running(command, port, tmp_path / "server.log", **env) as base:
        driver: object = chrome()
        try:
            driver.get(base + "/docs")  # type: ignore[attr-defined]
            first_anon = driver.get_cookie("ajs_anonymous_id")["value"]  # type: ignore[attr-defined]
            click(driver, "signup")
            fill(driver, base, "/signup", "ada")
            assert find(driver, "user").text == "usr_ada"
            click(driver, "create-key")
            token = find(driver, "api-key").text

            # the API client, elsewhere, with the key the user created
            with httpx.Client(base_url=base) as api:
                assert api.get("/api/v1/me", headers={"X-API-Key": token}).json() == {
                    "user": "usr_ada"
                }

            # another person on the same browser, nobody logged out: R3 "no reset"
            fill(driver, base, "/signup", "bob")
            assert driver.get_cookie("ajs_anonymous_id")["value"] == first_anon  # type: ignore[attr-defined]
            # Bob logs out (a reset) and in again: R3 "with reset"
            driver.get(base + "/account")  # type: ignore[attr-defined]
            click(driver, "logout")
            second_anon = driver.get_cookie("ajs_anonymous_id")["value"]  # type: ignore[attr-defined]
            assert second_anon != first_anon
            fill(driver, base, "/login", "bob")
        finally:
            driver.quit()  # type: ignore[attr-defined]

    key = api_key_identifier(SECRET, token)
    with ir.IdentityGraph(store=f"sqlite:///{db}") as graph:
        ada = graph.profile(user_id="usr_ada")
        assert ada is not None
        assert ada.anonymous_ids == {first_anon} and ada.identifiers["api_key"] == {key}
        assert token not in str(list(graph.profiles()))
        # docs -> sign-up -> first API call: one person
        steps = [("anonymous_id", first_anon), ("user_id", "usr_ada"), ("api_key", key)]
        assert {graph.profile(identifier=s).id for s in steps} == {ada.id}
        # no reset: the anonymous id stayed with Ada, Bob was refused it
        bob = graph.profile(user_id="usr_bob")
        assert bob is not None and first_anon not in bob.anonymous_ids
        assert any(
            r.identifier == ir.Identifier("anonymous_id", first_anon)
            and r.reason is ir.Reason.LIMIT_EXCEEDED
            for r in graph.refusals()
        )
        # with reset: the new anonymous id belongs to Bob; two clean profiles
        assert bob.anonymous_ids == {second_anon}
        assert graph.resolve(anonymous_id=second_anon) == "usr_bob"
        print(f"\nthe journey's profile: {ada}", file=sys.stderr)
