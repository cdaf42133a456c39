"""The screenshot of attnseq serve's page in README (docs/serve-page.png), taken in headless Chromium.

    python docs/serve_screenshot.py --ckpt runs/date [--out docs/serve-page.png]

Starts ``attnseq serve`` on 127.0.0.1 (a free port), types a few dates, hovers one output token so the
source characters it attends to light up, saves the PNG and stops the server. Needs selenium, chromium and
chromedriver (as the browser tests do).
"""
import argparse
import re
import shutil
import signal
import subprocess
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

LINES = ["Tuesday, Sept 25 1984", "9/25/84", "August 9, 1952", "Fri, Oct 25, 1957"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, metavar="RUN")
    p.add_argument("--out", default="docs/serve-page.png")
    p.add_argument("--hover", type=int, default=6, help="the output token to hover (6: the month's second digit)")
    args = p.parse_args()
    server = subprocess.Popen([sys.executable, "-m", "attnseq.cli", "serve", "--ckpt", args.ckpt, "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://\S+", server.stdout.readline())[0]
        opts = webdriver.ChromeOptions()
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,640"):
            opts.add_argument(arg)
        opts.binary_location = shutil.which("chromium") or shutil.which("google-chrome")
        browser = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
        try:
            browser.get(url)
            browser.find_element(By.ID, "text").send_keys("\n".join(LINES))
            WebDriverWait(browser, 30).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#outputs li")) == len(LINES))
            token = browser.find_elements(By.CSS_SELECTOR, "#heatmap .out-tok")[args.hover]
            ActionChains(browser).move_to_element(token).perform()
            time.sleep(0.3)
            browser.save_screenshot(args.out)
        finally:
            browser.quit()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    print(args.out)


if __name__ == "__main__":
    main()
