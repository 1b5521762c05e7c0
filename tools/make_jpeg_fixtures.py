"""Writes the small JPEG fixtures of yolo-data's top-rows decoder test
(crates/data/tests/fixtures/jpeg): one noisy 70x53 picture encoded with 4:4:4, 4:2:2 and 4:2:0
chroma subsampling, with and without restart markers, plus two files the decoder must decline
(progressive, and an EXIF rotation), and a 4:2:0 file from Pillow with optimised Huffman
tables (only the codes the image uses, so a re-encoded DC difference may have none). Needs numpy, opencv-python and Pillow:
    python tools/make_jpeg_fixtures.py [OUT_DIR]
"""
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

out = Path(sys.argv[1] if len(sys.argv) > 1 else "crates/data/tests/fixtures/jpeg")
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
h, w = 53, 70
y, x = np.mgrid[0:h, 0:w]
img = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1).astype(np.int32)
img = np.clip(img + rng.integers(-40, 40, img.shape), 0, 255).astype(np.uint8)  # RGB
bgr = img[..., ::-1].copy()
factors = {"444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
           "422": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
           "420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420}
for name, f in factors.items():
    for rst in (0, 2):
        params = [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, f]
        if rst:
            params += [cv2.IMWRITE_JPEG_RST_INTERVAL, rst]
        ok, buf = cv2.imencode(".jpg", bgr, params)
        assert ok
        (out / f"s{name}{'_rst' if rst else ''}.jpg").write_bytes(buf.tobytes())
ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
(out / "decline_progressive.jpg").write_bytes(buf.tobytes())
Image.fromarray(img).save(out / "s420_optimized.jpg", quality=85, subsampling=2, optimize=True)
exif = Image.Exif()
exif[0x0112] = 6  # orientation: rotate 90 CW
Image.fromarray(img).save(out / "decline_rotated.jpg", quality=90, exif=exif)
