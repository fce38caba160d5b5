"""``understudy model-server`` in its own process: prints its URL, serves, stops on TERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

import openai
import pytest

from protocols.prompts import agent_system_prompt, tool_definitions

pytestmark = pytest.mark.integration


def test_the_command_prints_its_url_serves_faults_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.cli", "model-server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        control = urllib.request.Request(  # noqa: S310 - a local http URL read from the server
            url.removesuffix("/v1") + "/_control/faults",
            method="POST",
            data=json.dumps({"faults": [{"kind": "500"}]}).encode(),
        )
        with urllib.request.urlopen(control, timeout=10) as response:  # noqa: S310
            queued = json.loads(response.read())
        system = agent_system_prompt("write a haiku about processes to p.txt", "", [], [], "/ws")
        messages = [{"role": "system", "content": system}]
        with openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=10) as client:
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(
                    model="m",
                    messages=messages,  # type: ignore[arg-type]
                    tools=tool_definitions(),
                )  # type: ignore[arg-type]
            completion = client.chat.completions.create(
                model="m", messages=messages, tools=tool_definitions()
            )  # type: ignore[arg-type]

        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _, errors = proc.communicate()

    assert url.startswith("http://127.0.0.1:"), errors
    assert {"queued": 1} == queued
    call = (completion.choices[0].message.tool_calls or [])[0]
    assert "/ws/p.txt" == json.loads(call.function.arguments)["path"]  # type: ignore[union-attr]
    assert 0 == code, errors
