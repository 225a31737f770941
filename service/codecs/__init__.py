"""Protocol codecs: request bodies -> typed requests (float32 [n, 28, 28] plus options), results -> bodies.

Pure functions, no Flask: the HTTP blueprints (and later a gRPC front end) call them with bytes or parsed JSON
and send back what they return. `body` holds what every protocol shares (the JSON reader, the batch cap),
`images` the image-file path (base64, decode, preprocess); `own`, `tfserving` and `v2` one protocol each.
"""
