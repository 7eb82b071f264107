"""The web console's exit gate, in headless Chromium (Playwright, driving Debian's chromium).

    journey.py BASE_URL SCREENSHOT_DIR     (env: CHROMIUM, ADMIN_TOKEN)

Alice signs in through the demo OpenID provider, creates an organization and a workspace,
stores a provider key (masked afterwards), writes a workflow with a YAML error (shown at its
line), fixes and publishes it, runs it to success and reads the audit log of all of it. Bob, of
another organization, sees none of it: a crafted URL to Alice's pages shows the page a random id
shows. Invited as a viewer, Bob reaches no mutating action, and a forced write is a 403 naming
the permission. Along the way: the CSP header, no token in document.cookie or storage, a stored
XSS attempt rendered as text, CSRF refused without the token, sign-out ending the session on the
server, and a platform admin suspending and reactivating the organization.
"""

import json
import os
import re
import sys
import urllib.error
import urllib.request
import uuid

from playwright.sync_api import expect, sync_playwright

BASE, SHOTS = sys.argv[1], sys.argv[2]
CONSOLE = f"{BASE}/console/"
SECRET_KEY = "sk-console-test-1234567890abcdefSECRET"
XSS_NAME = '<img src=x onerror="window.__xss=1">'
BROKEN_YAML = "steps:\n  - id: hello\n    usez: core.echo\n"
FIXED_YAML = "steps:\n  - id: hello\n    uses: core.echo\n    with: {greeting: hi}\n"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]
expect.set_options(timeout=15_000)
checks = 0


def check(condition, what):
    global checks
    if not condition:
        raise AssertionError(what)
    checks += 1


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def http(method, path, cookie=None, headers=None, body=None):
    """A request outside the browser (what a script holding a stolen cookie would send)."""
    request = urllib.request.Request(f"{BASE}{path}", method=method, data=body, headers=headers or {})
    if cookie:
        request.add_header("Cookie", cookie)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def new_page(browser, errors, viewport=None):
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return context, page


def sign_in_oidc(page, account):
    page.goto(CONSOLE)
    expect(page.get_by_role("heading", name="Sign in to tenantry")).to_be_visible()
    href = page.get_by_role("link", name="Sign in with Demo OpenID provider").get_attribute("href")
    page.goto(f"{BASE}{href}?login_hint={account}")
    expect(page.get_by_test_id("user")).to_have_text(account.capitalize())
    # The callback answered with a cookie and a redirect: no token in the URL, its fragment or history.
    check(page.url.split("#")[0] == CONSOLE and "token" not in page.url, f"signed in at {page.url}")


def session_cookie(context):
    cookies = [c for c in context.cookies() if c["name"] in ("tenantry_console", "__Host-tenantry_console")]
    check(len(cookies) == 1, "one console cookie")
    return cookies[0]


def main_text(page):
    return page.locator("main").inner_text()


def goto(page, fragment):
    """Opens a console page and waits until it and its lists have rendered."""
    target = f"{CONSOLE}#{fragment}"
    if page.url == target:
        page.reload()  # the same fragment again would not navigate
    else:
        page.goto(target)
    path = fragment.split("?", 1)[0]
    expect(page.locator(f'main[aria-busy="false"][data-route="{path}"]')).to_have_count(1)
    expect(page.locator("main .loading")).to_have_count(0)


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=os.environ["CHROMIUM"], args=ARGS)
    errors = []

    # --- Headers of the console and the sign-in page.
    alice_ctx, alice = new_page(browser, errors)
    response = alice.goto(CONSOLE)
    csp = response.headers.get("content-security-policy", "")
    check("script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "default-src 'none'" in csp,
          f"a strict CSP on the console: {csp!r}")
    check("unsafe-inline" not in csp, "no inline script allowed")
    check(response.headers.get("x-frame-options") == "DENY", "no framing")
    expect(alice.get_by_role("heading", name="Sign in to tenantry")).to_be_visible()
    alice.keyboard.press("Tab")
    check(alice.evaluate("document.activeElement.textContent") == "Skip to content", "keyboard: skip link first")
    shot(alice, "01-sign-in")

    # --- Alice signs in through the OpenID provider.
    sign_in_oidc(alice, "alice")
    cookie = session_cookie(alice_ctx)
    check(cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/", f"cookie flags {cookie}")
    check(alice.evaluate("document.cookie") == "", "no cookie readable by script")
    check(alice.evaluate("localStorage.length + sessionStorage.length") == 0, "nothing in web storage")
    alice_cookie = f"{cookie['name']}={cookie['value']}"

    # An organization and a workspace.
    slug = f"initech-{uuid.uuid4().hex[:8]}"
    form = alice.get_by_test_id("create-org")
    form.get_by_label("Name").fill("Initech")
    form.get_by_label("Slug").fill(slug)
    form.get_by_label("Region").select_option("us")
    form.get_by_label("Data mode").select_option("full")
    form.get_by_role("button", name="Create organization").click()
    expect(alice.get_by_test_id("org-region")).to_have_text("us")
    expect(alice.locator("#org-bar")).to_contain_text("region us")
    expect(alice.locator("#org-bar")).to_contain_text("data full")
    org_id = re.search(r"#/orgs/([0-9a-f-]{36})", alice.url).group(1)
    shot(alice, "02-organization")

    alice.get_by_role("link", name="Workspaces").click()
    form = alice.get_by_test_id("create-workspace")
    form.get_by_label("Name").fill("Research")
    form.get_by_role("button", name="Create workspace").click()
    expect(alice.get_by_role("heading", name="Research")).to_be_visible()
    ws_url = alice.url.split("#", 1)[1]
    ws_id = ws_url.rsplit("/", 1)[1]

    # A stored-XSS attempt is shown as text.
    goto(alice, f"/orgs/{org_id}/workspaces")
    form = alice.get_by_test_id("create-workspace")
    form.get_by_label("Name").fill(XSS_NAME)
    form.get_by_role("button", name="Create workspace").click()
    expect(alice.get_by_role("heading", name=XSS_NAME)).to_be_visible()
    goto(alice, f"/orgs/{org_id}/workspaces")
    expect(alice.get_by_test_id("workspaces")).to_contain_text(XSS_NAME)
    check(alice.locator("main img").count() == 0, "the name made no element")
    check(alice.evaluate("window.__xss") is None, "the name ran no script")
    shot(alice, "03-workspaces")

    # A provider key, masked once stored.
    goto(alice, ws_url)
    form = alice.get_by_test_id("store-provider-key")
    form.get_by_label("Provider").select_option("openai")
    form.get_by_label("API key").fill(SECRET_KEY)
    form.get_by_role("button", name="Store key").click()
    masked = alice.get_by_test_id("masked-key")
    expect(masked).to_have_count(1)
    check(SECRET_KEY not in masked.inner_text() and SECRET_KEY not in alice.content(), "the key is masked")
    check(masked.inner_text().endswith(SECRET_KEY[-4:]) and len(masked.inner_text()) < 10,
          f"a masked key is shown, its last four characters only: {masked.inner_text()!r}")

    # A workflow with a YAML error, shown at its line; fixed, published, run.
    editor = alice.get_by_test_id("workflow-editor")
    editor.get_by_label("Name").fill("greet")
    editor.get_by_test_id("yaml").fill(BROKEN_YAML)
    editor.get_by_role("button", name="Create workflow").click()
    expect(alice.get_by_test_id("yaml-error-line")).to_have_text("Error at line 3.")
    expect(alice.locator(".gutter span.error-line")).to_have_text("3")
    expect(alice.get_by_test_id("field-error").first).to_contain_text("line 3")
    shot(alice, "04-workflow-error")
    editor.get_by_test_id("yaml").fill(FIXED_YAML)
    editor.get_by_role("button", name="Create workflow").click()
    expect(alice.get_by_role("heading", name="greet")).to_be_visible()
    wf_url = alice.url.split("#", 1)[1]
    alice.get_by_role("button", name="Publish draft").click()
    expect(alice.get_by_text("Latest published version: v1")).to_be_visible()
    expect(alice.get_by_test_id("versions")).to_contain_text("v1")
    form = alice.get_by_test_id("start-run")
    form.get_by_label("Input (JSON object)").fill('{"who": "console"}')
    form.get_by_role("button", name="Start run").click()
    expect(alice.get_by_test_id("run-status")).to_have_text("succeeded", timeout=30_000)
    expect(alice.get_by_test_id("steps")).to_contain_text("succeeded")
    expect(alice.get_by_test_id("steps")).to_contain_text("greeting")
    shot(alice, "05-run")

    # The audit log has all of it, and its chain verifies.
    goto(alice, f"/orgs/{org_id}/audit")
    expect(alice.get_by_test_id("chain")).to_contain_text("Chain intact")
    audit = alice.get_by_test_id("audit")
    expect(audit).to_contain_text("workflow.publish")
    actions = set(audit.get_by_test_id("audit-action").all_inner_texts())
    for wanted in ("workspace.create", "provider_key.set", "workflow.create", "workflow.publish", "run.start"):
        check(wanted in actions, f"audit log has {wanted}: {sorted(actions)}")
    check(SECRET_KEY not in alice.content(), "the audit log does not show the key")
    shot(alice, "06-audit")

    # --- Bob, of another organization, sees none of it.
    bob_ctx, bob = new_page(browser, errors)
    sign_in_oidc(bob, "bob")
    expect(bob.get_by_test_id("orgs")).to_contain_text("You belong to no organization yet.")
    check("Initech" not in bob.locator("#org-bar").inner_text(), "Alice's organization is not in Bob's switcher")
    form = bob.get_by_test_id("create-org")
    form.get_by_label("Name").fill("Bobco")
    form.get_by_label("Slug").fill(f"bobco-{uuid.uuid4().hex[:8]}")
    form.get_by_role("button", name="Create organization").click()
    expect(bob.get_by_test_id("org-region")).to_be_visible()
    bob_org = re.search(r"#/orgs/([0-9a-f-]{36})", bob.url).group(1)
    pages = {}
    for name, fragment in {
        "crafted": wf_url,
        "random": f"/orgs/{uuid.uuid4()}/workspaces/{uuid.uuid4()}/workflows/{uuid.uuid4()}",
    }.items():
        goto(bob, fragment)
        expect(bob.get_by_test_id("not-found")).to_be_visible()
        pages[name] = main_text(bob)
    check(pages["crafted"] == pages["random"], f"another tenant's page is a random id's: {pages}")
    goto(bob, f"/orgs/{org_id}/audit")
    expect(bob.get_by_test_id("not-found")).to_be_visible()
    check(pages["crafted"] == main_text(bob), "the audit page too")
    shot(bob, "07-not-found")

    # CSRF: a cookie-authenticated write without the token is refused; with it, it works.
    no_token = bob.evaluate("""async (org) => {
        const r = await fetch(`/api/v1/orgs/${org}/workspaces`, {method: 'POST',
            headers: {'Content-Type': 'application/json'}, body: JSON.stringify({name: 'csrf'})});
        return [r.status, (await r.json()).code]; }""", bob_org)
    check(no_token == [403, "csrf_rejected"], f"a write without the CSRF token: {no_token}")
    status, _ = http("POST", f"/api/v1/orgs/{bob_org}/workspaces", cookie=alice_cookie,
                     headers={"Content-Type": "application/json", "X-CSRF-Token": "0" * 64}, body=b'{"name":"x"}')
    check(status == 403, f"a wrong CSRF token: {status}")

    # Bob, invited as a viewer, reaches no mutating action.
    goto(alice, f"/orgs/{org_id}/members")
    form = alice.get_by_test_id("invite")
    form.get_by_label("Email").fill("bob@example.test")
    form.get_by_label("Role").select_option("viewer")
    form.get_by_role("button", name="Send invitation").click()
    token = alice.get_by_test_id("invitation-token").locator(".secret").inner_text()
    shot(alice, "08-members")
    goto(bob, "/")
    form = bob.get_by_test_id("accept-invitation")
    form.get_by_label("Invitation token").fill(token)
    form.get_by_role("button", name="Accept").click()
    expect(bob.get_by_test_id("org-name")).to_have_text("Initech")
    expect(bob.locator("#org-bar")).to_contain_text("role viewer")
    for fragment in (f"/orgs/{org_id}/workspaces", ws_url, wf_url, f"/orgs/{org_id}/members",
                     f"/orgs/{org_id}/api-keys", f"/orgs/{org_id}/flags", f"/orgs/{org_id}/billing", f"/orgs/{org_id}"):
        goto(bob, fragment)
        main = bob.locator("main")
        mutating = main.locator("form button[type=submit]").filter(
            has_not_text=re.compile("^(Filter)$"))
        check(mutating.count() == 0, f"viewer sees no mutating form on {fragment}: {mutating.all_inner_texts()}")
        for label in ("Delete", "Revoke", "Remove", "Publish draft", "Archive", "Cancel run", "Reset"):
            check(main.get_by_role("button", name=label).count() == 0, f"no {label} for a viewer on {fragment}")
    goto(bob, wf_url)
    expect(bob.get_by_test_id("read-only").first).to_contain_text("workflows:write")
    check(bob.get_by_test_id("yaml").get_attribute("readonly") is not None, "the editor is read-only")
    shot(bob, "09-viewer")
    forced = bob.evaluate("""async ([org, csrf]) => {
        const s = await (await fetch('/console/session')).json();
        const r = await fetch(`/api/v1/orgs/${org}/workspaces`, {method: 'POST',
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token},
            body: JSON.stringify({name: 'forced'})});
        return [r.status, (await r.json()).permission]; }""", [org_id, None])
    check(forced == [403, "workspaces:write"], f"a viewer's forced write: {forced}")

    # Alice's other pages: an API key (shown once, usable, revoked), a custom role, Bob's role
    # and workspace restriction, flags and billing.
    goto(alice, f"/orgs/{org_id}/api-keys")
    form = alice.get_by_test_id("create-api-key")
    form.get_by_label("Name").fill("CI deploys")
    form.get_by_label("workspaces:read").check()
    form.get_by_role("button", name="Create key").click()
    secret = alice.get_by_test_id("new-api-key").locator(".secret").inner_text()
    status, _ = http("GET", f"/api/v1/orgs/{org_id}/workspaces", headers={"Authorization": f"Bearer {secret}"})
    check(secret.startswith("tnty_") and status == 200, f"the new key works: {status}")
    goto(alice, f"/orgs/{org_id}/api-keys")
    expect(alice.get_by_test_id("api-keys")).to_contain_text("CI deploys")
    check(secret not in alice.content(), "the key is not shown again")
    alice.get_by_role("button", name="Revoke CI deploys").click()
    expect(alice.get_by_test_id("api-keys")).to_contain_text("revoked")
    status, _ = http("GET", f"/api/v1/orgs/{org_id}/workspaces", headers={"Authorization": f"Bearer {secret}"})
    check(status == 401, f"the revoked key is refused: {status}")

    goto(alice, f"/orgs/{org_id}/members")
    form = alice.get_by_test_id("create-role")
    form.get_by_label("Name").fill("release-manager")
    form.get_by_label("workflows:publish").check()
    form.get_by_role("button", name="Create role").click()
    expect(alice.get_by_test_id("roles")).to_contain_text("release-manager")
    bob_row = alice.get_by_test_id("members").locator("tr", has_text="bob@example.test")
    bob_row.get_by_text("Workspaces").click()
    bob_row.get_by_label("Research").check()
    bob_row.get_by_role("button", name="Restrict to checked").click()
    expect(alice.get_by_test_id("members").locator("details[open]")).to_have_count(0)  # redrawn
    expect(alice.locator("main .loading")).to_have_count(0)
    bob_row = alice.get_by_test_id("members").locator("tr", has_text="bob@example.test")
    bob_row.locator("select[name=role]").select_option("editor")
    bob_row.get_by_role("button", name="Change role").click()
    expect(alice.get_by_test_id("members").locator("tr", has_text="bob@example.test").locator("td").nth(1)).to_have_text("editor")
    bob.reload()
    goto(bob, f"/orgs/{org_id}/workspaces")
    expect(bob.locator("#org-bar")).to_contain_text("role editor")
    expect(bob.get_by_test_id("workspaces")).to_contain_text("Research")
    check(XSS_NAME not in bob.get_by_test_id("workspaces").inner_text(), "Bob is restricted to Research")
    for fragment, heading in ((f"/orgs/{org_id}/flags", "Feature flags"), (f"/orgs/{org_id}/billing", "Billing")):
        goto(alice, fragment)
        expect(alice.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        check(alice.get_by_test_id("problem").count() == 0, f"{heading} renders without a problem")
    expect(alice.get_by_test_id("subscription")).to_contain_text("No subscription")
    alice.get_by_label("Plan").select_option("pro")
    alice.get_by_role("button", name="Subscribe").click()
    expect(alice.get_by_test_id("subscription")).to_contain_text("pro")
    expect(alice.get_by_test_id("invoices")).not_to_contain_text("No invoices.")
    shot(alice, "12-billing")

    # --- A platform admin (pasted development token) suspends and reactivates Initech.
    admin_ctx, admin = new_page(browser, errors)
    admin.goto(CONSOLE)
    form = admin.get_by_test_id("token-sign-in")
    form.get_by_label("Access token").fill(os.environ["ADMIN_TOKEN"])
    form.get_by_role("button", name="Sign in with token").click()
    admin.get_by_role("link", name="Platform admin").click()
    expect(admin.get_by_test_id("health")).to_contain_text("Migrations")
    admin.get_by_role("button", name="Suspend Initech").click()
    expect(admin.get_by_role("button", name="Reactivate Initech")).to_be_visible()
    shot(admin, "10-admin")
    goto(alice, f"/orgs/{org_id}/workspaces")
    alice.reload()
    expect(alice.get_by_test_id("problem")).to_contain_text("suspended")
    admin.get_by_role("button", name="Reactivate Initech").click()
    expect(admin.get_by_role("button", name="Suspend Initech")).to_be_visible()
    alice.reload()
    expect(alice.get_by_test_id("workspaces")).to_contain_text("Research")

    # A phone's width.
    alice.set_viewport_size({"width": 390, "height": 844})
    goto(alice, ws_url)
    expect(alice.get_by_test_id("runs")).to_contain_text("succeeded")
    width = alice.evaluate("document.documentElement.scrollWidth")
    check(width <= 400, f"no horizontal scrolling at phone width: {width}")
    shot(alice, "11-phone-workspace")

    # Sign-out ends the session on the server: the old cookie is refused from then on.
    status, _ = http("GET", "/api/v1/me", cookie=alice_cookie)
    check(status == 200, f"the cookie works before sign-out: {status}")
    alice.get_by_role("button", name="Sign out").click()
    expect(alice.get_by_text("You are signed out.")).to_be_visible()
    status, body = http("GET", "/api/v1/me", cookie=alice_cookie)
    check(status == 401, f"the old cookie after sign-out: {status} {body[:200]}")
    check(len(session_cookie_list := [c for c in alice_ctx.cookies() if "console" in c["name"]]) == 0,
          f"the browser forgot the cookie: {session_cookie_list}")

    csp_errors = [e for e in errors if "Content Security Policy" in e or "Refused to" in e]
    check(not csp_errors, f"no CSP violations: {csp_errors}")
    unexpected = [e for e in errors if "the server responded with a status of 4" not in e and e not in csp_errors]
    check(not unexpected, f"no script errors: {unexpected}")
    browser.close()

print(f"console journey: {checks} checks passed; screenshots in {SHOTS}")
