"""helm test: draw a "1" with Pillow, predict it through the Service, fail unless the service says 1."""

import io
import json
import os
import sys
import urllib.request

from PIL import Image, ImageDraw

image = Image.new("L", (280, 280), 255)  # white paper, black ink: the service inverts like a phone photo
ImageDraw.Draw(image).line([(140, 50), (140, 230)], fill=0, width=24)
body = io.BytesIO()
image.save(body, format="PNG")

url = os.environ["MNIST_TEST_URL"] + "/predict"
request = urllib.request.Request(url, data=body.getvalue(), headers={"Content-Type": "image/png"})
with urllib.request.urlopen(request, timeout=30) as response:
    result = json.load(response)
print(json.dumps(result))
sys.exit(0 if result.get("digit") == 1 else 1)
