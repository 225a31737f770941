"""`Api`: the service's calls as a client makes them, over a live server (base URL) or Flask's test client.

Both transports answer with a `Reply` (status, headers, body), so one test body reads the same in process
and over loopback HTTP: `api.predict(png, model="softmax")`, `api.get("/api/predictions", limit=5)`.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import requests
from flask.testing import FlaskClient

TIMEOUT_S = 30


@dataclass(frozen=True)
class Reply:
    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Api:
    def __init__(self, target: str | FlaskClient) -> None:
        self.target = target

    # --- the calls tests make most ---

    def predict(self, png: bytes | None = None, *, model: str | None = None, **body: Any) -> Any:
        """POST /predict with a PNG upload (or a JSON body from `body`, e.g. pixels=...); must be a 200."""
        params = {"model": model} if model else {}
        reply = (
            self.post("/predict", files={"image": png}, params=params)
            if png
            else self.post("/predict", json=body, params=params)
        )
        assert reply.status_code == 200, reply.text
        return reply.json()

    def record(self, record_id: str) -> Any:
        reply = self.get(f"/api/predictions/{record_id}")
        assert reply.status_code == 200, reply.text
        return reply.json()

    def feedback(self, record_id: str, label: object) -> Reply:
        return self.post(f"/api/predictions/{record_id}/feedback", json={"label": label})

    # --- any request ---

    def get(self, path: str, **params: Any) -> Reply:
        return self.request("GET", path, params=params)

    def post(
        self,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        files: dict[str, bytes] | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        return self.request("POST", path, json=json, data=data, files=files, params=params, headers=headers)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        files: dict[str, bytes] | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        if isinstance(self.target, str):
            r = requests.request(
                method,
                self.target + path,
                json=json,
                data=data,
                files={name: (f"{name}.png", content) for name, content in files.items()} if files else None,
                params=params,
                headers=headers,
                timeout=TIMEOUT_S,
            )
            return Reply(r.status_code, dict(r.headers), r.content)
        form = {name: (io.BytesIO(content), f"{name}.png") for name, content in (files or {}).items()}
        response = self.target.open(
            path,
            method=method,
            json=json,
            data=form or data,
            query_string=params or None,
            headers=headers,
        )
        return Reply(response.status_code, dict(response.headers), response.get_data())
