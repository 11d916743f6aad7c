"""A black box behind HTTP: the query-only optimizer drives a model it reaches only by POSTing
images to a server on 127.0.0.1, which this test starts and stops itself.

The server holds the toy net of test_blackbox (class 0 hindered by its top-left quadrant) and
answers each POST of a ``.npy`` batch with a ``.npy`` of probabilities: the client never sees
the model, its logits or a gradient.
"""

from __future__ import annotations

import http.server
import io
import threading
import urllib.request

import numpy as np
import pytest
import torch
from toy import HALF, Hindered, found

from upx_core import MaskSetting, OptimConfig
from upx_core.method.blackbox import optimize_masks_blackbox


class _ModelHandler(http.server.BaseHTTPRequestHandler):
    net = Hindered()
    bad = False  # answer with a wrong shape, as a misconfigured service might

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        x = torch.from_numpy(np.load(io.BytesIO(body)))
        with torch.no_grad():
            probs = self.net(x).softmax(1).numpy()
        buf = io.BytesIO()
        np.save(buf, probs[:, :1] if self.bad else probs)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        self.wfile.write(buf.getvalue())

    def log_message(self, format, *args):  # noqa: A002 (quiet)
        pass


@pytest.fixture()
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ModelHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/predict", httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        _ModelHandler.bad = False


def http_predictor(url: str):
    """``predict`` for optimize_masks_blackbox: POST the batch as .npy, read .npy back."""
    posts = []

    def predict(images):
        buf = io.BytesIO()
        np.save(buf, np.asarray(images, dtype=np.float32))
        request = urllib.request.Request(url, data=buf.getvalue(), method="POST",
                                         headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(request, timeout=30) as response:
            posts.append(len(images))
            return np.load(io.BytesIO(response.read()))

    predict.posts = posts
    return predict


def test_queries_over_http_find_the_hindering_quadrant(server):
    url, _ = server
    image = torch.rand(1, 3, 2 * HALF, 2 * HALF, generator=torch.Generator().manual_seed(0))
    predict = http_predictor(url)
    result = optimize_masks_blackbox(predict, image, targets=0, outputs="probs",
                                     settings=MaskSetting(mode="baseline", seed=0),
                                     config=OptimConfig(iterations=100), batch_size=16,
                                     progress=False)
    gain, share = found(result)
    # the bounds of test_blackbox's torch run (gain 0.566, share 0.808 there)
    assert gain > 0.4 and share > 0.6, (gain, share)
    # every query crossed the wire, in POSTs of at most batch_size images
    assert sum(predict.posts) == int(result.queries[0, 0]) and max(predict.posts) <= 16


def test_a_service_answering_the_wrong_shape_is_a_one_line_error(server):
    url, _ = server
    _ModelHandler.bad = True
    image = torch.rand(1, 3, 2 * HALF, 2 * HALF)
    with pytest.raises(ValueError, match=r"predict must return \[N, C\] scores") as err:
        optimize_masks_blackbox(http_predictor(url), image, targets=0, progress=False)
    assert "\n" not in str(err.value)
