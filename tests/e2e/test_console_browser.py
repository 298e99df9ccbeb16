"""The ops console in a real browser (Playwright driving Debian's chromium) on the real stack: demo tickets
arrive live, a timeline opens, a viewer is refused, an approver releases a refund that then completes,
an operator halts intake with a kill switch and releases it. Screenshots go to test-artifacts/console/."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agentbus.cli import client, demo
from agentbus.cli.stack import EMBEDDED_BROKER_ENV, Stack
from demo_tickets import demo_events
from playwright.async_api import Page, async_playwright, expect

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "console"
CHROMIUM = shutil.which("chromium")
PIPELINE_MS = 30_000  # how long a ticket may take through the pipeline on a loaded machine


@pytest.fixture
async def stack(broker, server_database_url, topic_prefix, tmp_path) -> AsyncIterator[Stack]:
    stack = Stack(
        state_dir=tmp_path,
        bootstrap=broker.bootstrap,
        database_url=server_database_url,
        topic_prefix=topic_prefix,
        extra_env=dict(EMBEDDED_BROKER_ENV),
        services=[
            "intake",
            "planner",
            "policy",
            "executor",
            "verifier",
            "escalation",
            "trace-sink",
            "console",
        ],
    )
    try:
        await stack.start()
        yield stack
    except BaseException:
        for log in sorted((tmp_path / "logs").glob("*.log")):
            print(f"==== {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        stack.stop()


async def sign_in(page: Page, token: str, who: str) -> None:
    if await page.locator("#signout").is_visible():
        await page.click("#signout")
    await page.fill("#token", token)
    await page.click("#signin-form button")
    await expect(page.locator("#who")).to_contain_text(who)
    await expect(page.locator("#live")).to_have_text("live")


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def status_of(page: Page, ticket_id: str):  # type: ignore[no-untyped-def]
    return page.locator(f'tr[data-ticket="{ticket_id}"] td.status')


async def test_the_console_in_a_browser(stack: Stack) -> None:
    # A missing browser fails the test rather than skipping it: `make test` installs it first.
    assert CHROMIUM is not None, "no chromium on PATH: `make chromium` installs Debian's"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        # Root in a container has no user namespaces for chromium's sandbox.
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            await page.goto(stack.console_url)
            await sign_in(page, "bob-demo-token", "user:bob (viewer)")

            # Demo tickets published after the page opened arrive live (no reload).
            events, ids = demo_events()
            await client.publish(stack.settings(), events)
            refund_20, refund_40 = ids["ORD-1001 $20 refund"], ids["ORD-1002 $40 refund"]
            await expect(status_of(page, refund_20)).to_have_text("resolved", timeout=PIPELINE_MS)
            await expect(status_of(page, refund_40)).to_have_text("awaiting_approval", timeout=PIPELINE_MS)
            await expect(status_of(page, ids["ORD-1003 $80 refund"])).to_have_text("escalated")
            await expect(page.locator("#deadletter-list")).to_contain_text("malformed")
            await expect(page.locator('[data-kpi="automation_rate"] .value')).not_to_have_text("n/a")
            await shot(page, "01-live-tickets")

            # The $20 refund's timeline: each decision with its rules and reason, and the results.
            await page.click(f'a[data-open="{refund_20}"]')
            await expect(page.locator("#timeline-title")).to_contain_text(f"{refund_20} — resolved")
            decisions = page.locator('#steps tr[data-step="action.decided"]')
            await expect(decisions).to_have_count(5)
            await expect(decisions.nth(1)).to_contain_text("refund.autonomous")
            await expect(decisions.nth(1)).to_contain_text("capability=")
            await expect(page.locator('#steps tr[data-step="action.executed"]').first).to_contain_text(
                "succeeded"
            )
            await shot(page, "02-timeline")

            # A viewer sees the approval with its change, but approving and switching are refused.
            approval = page.locator(f'li[data-ticket="{refund_40}"]')
            await expect(approval).to_contain_text("amount_cents", timeout=10_000)
            await approval.locator('[data-decide="approve"]').click()
            await expect(page.locator("#notice")).to_have_text(
                "refused: to approve an approval you need the console role approver; user:bob has: viewer"
            )
            await page.select_option("#switch-scope", "topic")
            await page.fill("#switch-target", "tickets.received")
            await page.fill("#switch-reason", "drill")
            await page.click('#switch-form button[name="engage"]')
            await expect(page.locator("#notice")).to_contain_text(
                "refused: to engage a kill switch you need the console role operator"
            )
            await shot(page, "03-viewer-refused")

            # An approver releases the refund, which then completes.
            await sign_in(page, "alice-demo-token", "user:alice (approver)")
            approval = page.locator(f'li[data-ticket="{refund_40}"]')
            await approval.locator(".decision-reason").fill("customer verified")
            await approval.locator('[data-decide="approve"]').click()
            await expect(page.locator("#notice")).to_contain_text("as user:alice")
            await expect(status_of(page, refund_40)).to_have_text("resolved", timeout=PIPELINE_MS)
            await shot(page, "04-approved-and-resolved")

            # An operator halts intake: a new ticket is received and goes no further until released.
            await sign_in(page, "carol-demo-token", "user:carol (operator)")
            await page.select_option("#switch-scope", "topic")
            await page.fill("#switch-target", "tickets.received")
            await page.fill("#switch-reason", "incident drill")
            await page.click('#switch-form button[name="engage"]')
            halted = page.locator('[data-switch="topic:agentbus.tickets.received.v1"]')
            await expect(halted).to_contain_text("by user:carol: incident drill")
            held = f"T-HALT-{uuid.uuid4().hex[:6].upper()}"
            await client.publish(
                stack.settings(), [client.ticket_event(demo.question_ticket() | {"ticket_id": held})]
            )
            await expect(status_of(page, held)).to_have_text("received", timeout=10_000)
            await page.wait_for_timeout(3_000)  # intake would have classified it within a second
            await expect(status_of(page, held)).to_have_text("received")
            await shot(page, "05-halted")

            await page.fill("#switch-reason", "drill over")
            await page.click('#switch-form button[name="release"]')
            await expect(halted).to_have_count(0)
            await expect(status_of(page, held)).to_have_text("escalated", timeout=PIPELINE_MS)
            await shot(page, "06-released")
            assert errors == []
        finally:
            await browser.close()
