"""The chat page's files: served from the package, with this megaservice's config and a strict CSP."""

import json
import re

import pytest

from megaservice.exceptions import ConfigurationError
from megaservice.gateway import create_gateway
from megaservice.pipeline import parse_pipeline
from megaservice.settings import Settings

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("upstream_client")]


async def test_the_page_and_its_assets_are_served_with_the_config(stack):
    async with stack.client() as http:
        page = await http.get("/")
        script = await http.get("/static/app.js")
        style = await http.get("/static/style.css")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    config = json.loads(re.search(r'<script id="config" type="application/json">(.*?)</script>', page.text).group(1))
    assert config == {"name": "chatqna", "description": "Questions about your documents", "dataprep": True}
    assert script.headers["content-type"].startswith("text/javascript") and "/v1/chat/completions" in script.text
    assert style.headers["content-type"].startswith("text/css")
    everything = page.text + script.text + style.text
    assert not re.search(r"(src|href)=[\"']?(https?:)?//|url\((https?:)?//|fetch\([\"'`]https?:", everything)


async def test_the_config_cannot_close_its_script_block():
    text = (
        "name: x\ndescription: '</script><script>alert(1)</script>'\n"
        "services:\n  llm: {url: 'http://127.0.0.1:9', role: llm}\nmegaservice:\n  flow: [llm]\n"
    )
    from megaservice.testing import serve

    async with serve(create_gateway(parse_pipeline(text, environ={}), Settings()).app) as url:
        import httpx

        async with httpx.AsyncClient(base_url=url) as http:
            page = (await http.get("/")).text
    assert page.count("</script>") == 2  # the config block's and app.js's own
    assert "\\u003c/script>" in page


async def test_the_page_needs_the_openai_route():
    text = "name: x\nservices:\n  llm: {url: 'http://h:1', role: llm}\nmegaservice:\n  flow: [llm]\n  routes: [ui]\n"
    with pytest.raises(ConfigurationError, match="openai"):
        create_gateway(parse_pipeline(text, environ={}), Settings())
