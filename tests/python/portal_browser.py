"""Walks the patient portal in headless Chromium (Debian's chromium and
chromedriver, driven by Selenium's WebDriver client): the invitation link,
activation, the results list, a result's detail, logout and login by
keyboard, at phone and desktop width, with a screenshot of every page.

Reads its inputs from the environment (set by tests/tests/portal_browser.rs):
PORTAL_BASE, ADA_LINK, ADA_EMAIL, ADA_PASSWORD, SHOWN_ORDERS and
HIDDEN_ORDERS (comma-separated order ids), CORRECTED_ORDER, SCREENSHOTS.
Exits non-zero, naming the check, when one fails.
"""

import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from selenium.common.exceptions import TimeoutException

BASE = os.environ["PORTAL_BASE"]
LINK = os.environ["ADA_LINK"]
EMAIL = os.environ["ADA_EMAIL"]
PASSWORD = os.environ["ADA_PASSWORD"]
SHOWN = os.environ["SHOWN_ORDERS"].split(",")
HIDDEN = os.environ["HIDDEN_ORDERS"].split(",")
CORRECTED = os.environ["CORRECTED_ORDER"]
SHOTS = os.environ["SCREENSHOTS"]
WIDTHS = {"phone": (360, 780), "desktop": (1280, 900)}

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAILED:", what, file=sys.stderr)


# WCAG 2 contrast of each visible text element against the first opaque
# background behind it; returns the elements under 4.5:1.
LOW_CONTRAST_JS = """
function lum(c){const m=c.match(/[\\d.]+/g).map(Number);const a=m.length>3?m[3]:1;
 const f=v=>{v/=255;return v<=0.03928?v/12.92:Math.pow((v+0.055)/1.055,2.4)};
 return {l:0.2126*f(m[0])+0.7152*f(m[1])+0.0722*f(m[2]),a:a};}
function bg(e){while(e){const c=getComputedStyle(e).backgroundColor;const v=lum(c);if(v.a>0.5)return v.l;e=e.parentElement;}return 1;}
const bad=[];
for(const e of document.querySelectorAll('p,a,button,label,th,td,h1,h2,li,span,input')){
 if(!e.offsetParent&&e.tagName!=='BODY')continue;
 if(!e.textContent.trim()&&e.tagName!=='INPUT')continue;
 const fg=lum(getComputedStyle(e).color).l;const b=bg(e);
 const r=(Math.max(fg,b)+0.05)/(Math.min(fg,b)+0.05);
 if(r<4.5)bad.push(e.tagName+' '+e.textContent.trim().slice(0,30)+' '+r.toFixed(2));}
return bad;
"""


def arrives(driver, cond):
    """Whether the page satisfies cond within 10 s: a click or an Enter that
    submits a form returns before the browser has loaded the next page."""
    try:
        WebDriverWait(driver, 10).until(cond)
        return True
    except TimeoutException:
        return False


def at(path):
    return lambda d: d.current_url.endswith(path)


def page_checks(driver, name):
    path = os.path.join(SHOTS, name + ".png")
    driver.save_screenshot(path)
    print("screenshot", path)
    check(driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en", name + ": lang")
    width = driver.execute_script("return window.innerWidth")
    check(width == WIDTHS[name.split("-")[0]][0], f"{name}: a {width} px wide viewport")
    scroll = driver.execute_script("return document.documentElement.scrollWidth")
    check(scroll <= width, f"{name}: no sideways scrolling ({scroll} > {width})")
    for i in driver.find_elements(By.CSS_SELECTOR, "input:not([type=hidden])"):
        labels = driver.find_elements(By.CSS_SELECTOR, f"label[for='{i.get_attribute('id')}']")
        check(len(labels) == 1, f"{name}: input {i.get_attribute('name')} has a label")
    low = driver.execute_script(LOW_CONTRAST_JS)
    check(not low, f"{name}: contrast of {low}")


def type_in(driver, *values):
    """Types each value into the next field with the keyboard, then Enter."""
    active = driver.switch_to.active_element
    for i, v in enumerate(values):
        active.send_keys(v)
        active.send_keys(Keys.ENTER if i == len(values) - 1 else Keys.TAB)
        active = driver.switch_to.active_element


def results_checks(driver, name):
    src = driver.page_source
    for o in SHOWN:
        check(f"/portal/results/{o}" in src, f"{name}: order {o} listed")
    for o in HIDDEN:
        check(f"/portal/results/{o}" not in src, f"{name}: order {o} not listed")
    check("Bob" not in src, f"{name}: no other patient's name")


def main():
    os.makedirs(SHOTS, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.set_page_load_timeout(30)
        for device, (w, h) in WIDTHS.items():
            # A window cannot be narrower than about 500 px: the phone's
            # viewport is set through the DevTools protocol instead.
            driver.set_window_size(max(w, 800), h)
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": w, "height": h, "deviceScaleFactor": 1, "mobile": device == "phone"})
            if device == "phone":
                driver.get(LINK)
                page_checks(driver, f"{device}-activate")
                driver.find_element(By.ID, "password").click()
                type_in(driver, PASSWORD, PASSWORD)
                check(arrives(driver, at("/portal/results")), "activation leads to the results")
            else:
                driver.get(LINK)
                check("already used" in driver.page_source, "a used link says so")
                page_checks(driver, f"{device}-used-link")
                driver.get(BASE + "/portal/login")
                page_checks(driver, f"{device}-login")
                driver.find_element(By.ID, "email").click()
                type_in(driver, EMAIL, PASSWORD)
                check(arrives(driver, at("/portal/results")), "a keyboard login leads to the results")
            page_checks(driver, f"{device}-results")
            results_checks(driver, f"{device}-results")
            session = {c["name"]: c for c in driver.get_cookies()}.get("lis_portal", {})
            check(session.get("httpOnly") is True, f"{device}: the session cookie is HttpOnly")
            check(driver.execute_script("return document.cookie") == "", f"{device}: scripts see no cookie")
            driver.find_element(By.CSS_SELECTOR, f"a[href='/portal/results/{CORRECTED}']").click()
            check(arrives(driver, at(f"/portal/results/{CORRECTED}")), f"{device}: the link opens the result")
            src = driver.page_source
            check("Corrected" in src and "13.1" in src, f"{device}: the corrected result says so")
            check("Complete blood count" in src and "g/dL" in src, f"{device}: test name and unit")
            page_checks(driver, f"{device}-result")
            driver.get(BASE + "/portal/results/" + HIDDEN[-1])
            check("not found" in driver.page_source.lower(), f"{device}: another patient's order is not found")
            driver.find_element(By.CSS_SELECTOR, "form.logout button").click()
            check(arrives(driver, lambda d: "/portal/login" in d.current_url),
                  f"{device}: logout leads to the login page")
            check("logged out" in driver.page_source, f"{device}: logout says so")
            page_checks(driver, f"{device}-logged-out")
            driver.get(BASE + "/portal/results")
            check(driver.current_url.endswith("/portal/login"), f"{device}: after logout the results need a login")
            driver.get(BASE + "/portal/new-link")
            page_checks(driver, f"{device}-new-link")
    finally:
        driver.quit()
    if failures:
        print(f"{len(failures)} browser checks failed", file=sys.stderr)
        sys.exit(1)
    print("browser walk passed")


main()
