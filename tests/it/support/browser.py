"""Loads pages of the web view in a real Chromium (Debian's, through chromium-driver) with
Selenium, and reports what each page showed as JSON lines on stdout:

  {"url": ..., "title": ..., "text": <the visible text>, "pwned": <window.__pwned>,
   "console": [<browser console messages>], "links": [<hrefs>]}

Usage: browser.py CHROMIUM CHROMEDRIVER PROXY URL...   (PROXY: "" or "socks5://127.0.0.1:PORT")
"""

import json
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def main():
    chromium, driver_path, proxy, *urls = sys.argv[1:]
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        opts.add_argument(a)
    if proxy:
        opts.add_argument(f"--proxy-server={proxy}")
        # Names are resolved by the proxy (the viewer's tailscaled knows MagicDNS).
        opts.add_argument("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_page_load_timeout(60)
    try:
        for url in urls:
            driver.get(url)
            body = driver.find_element(By.TAG_NAME, "body")
            out = {
                "url": url,
                "title": driver.title,
                "text": body.text,
                "pwned": driver.execute_script("return window.__pwned === undefined ? null : window.__pwned"),
                "console": [e.get("message", "") for e in driver.get_log("browser")],
                "links": [a.get_attribute("href") for a in driver.find_elements(By.TAG_NAME, "a")],
            }
            print(json.dumps(out), flush=True)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
