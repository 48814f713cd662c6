#!/usr/bin/env python3
"""Compares a `fer features` cache with the reference implementation on real faces: dlib's Python
landmarks in the box (1,1)-(47,47) and scikit-image's sliding-window and whole-image HOG, for the
first N Training faces. Prints one JSON line.

    pip install dlib-bin scikit-image numpy
    fer features --data fer2013.csv.gz --out features.cache
    python3 benches/reference/check_features.py --data fer2013.csv.gz --cache features.cache --faces 2000
"""
import argparse
import json
import struct

import dlib
import numpy as np
import skimage
from skimage.feature import hog

from python_features import MODEL, sliding, training_faces

PER_FACE = 136 + 2592 + 72
HEADER = 8 + 4 + 4 + 3 * 8


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--faces", type=int, default=2000)
    a = p.parse_args()
    faces = training_faces(a.data, a.faces)
    with open(a.cache, "rb") as f:
        head = f.read(HEADER)
        assert head[:8] == b"FERFEATS", "not a fer-rs feature cache"
        (training,) = struct.unpack("<Q", head[16:24])
        assert training >= len(faces)
        rust = np.frombuffer(f.read(4 * PER_FACE * len(faces)), dtype="<f4").reshape(len(faces), PER_FACE)
    predictor = dlib.shape_predictor(MODEL)
    box = dlib.rectangle(1, 1, 47, 47)
    same_landmarks = 0
    max_sliding = max_whole = 0.0
    for i, face in enumerate(faces):
        points = np.array([[q.x, q.y] for q in predictor(face, box).parts()], dtype=np.float32).ravel()
        same_landmarks += bool(np.array_equal(points, rust[i, :136]))
        s = np.asarray(sliding(face), dtype=np.float32)
        w = hog(face, orientations=8, pixels_per_cell=(16, 16), cells_per_block=(1, 1)).astype(np.float32)
        max_sliding = max(max_sliding, float(np.abs(s - rust[i, 136:136 + 2592]).max()))
        max_whole = max(max_whole, float(np.abs(w - rust[i, 136 + 2592:]).max()))
    print(json.dumps({
        "faces": len(faces),
        "python_dlib": dlib.__version__,
        "scikit_image": skimage.__version__,
        "faces_with_identical_landmarks": same_landmarks,
        "max_abs_diff_sliding_hog_f32": max_sliding,
        "max_abs_diff_whole_hog_f32": max_whole,
    }))


if __name__ == "__main__":
    main()
