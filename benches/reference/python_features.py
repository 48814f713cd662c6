#!/usr/bin/env python3
"""Side-by-side reference for `fer features --bench N`: the reference project's feature extraction in
Python (dlib landmarks in the fixed box (1,1)-(47,47), scikit-image sliding-window HOG and whole-image
HOG), one thread, on the first N Training faces of FER2013. Prints one JSON line with the keys of
`fer features --bench N --json`.

    pip install dlib-bin scikit-image numpy
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python3 benches/reference/python_features.py --data fer2013.csv.gz --faces 1000

Nothing in fer-rs depends on this script.
"""
import argparse
import csv
import gzip
import io
import json
import time

import dlib
import numpy as np
from skimage.feature import hog

MODEL = "/usr/share/dlib/shape_predictor_68_face_landmarks.dat"


def training_faces(path, n):
    opener = gzip.open if path.endswith(".gz") else open
    faces = []
    with opener(path, "rt") as f:
        for row in csv.DictReader(f):
            if row["Usage"] == "Training":
                faces.append(np.array(row["pixels"].split(), dtype=np.uint8).reshape(48, 48))
                if len(faces) == n:
                    break
    return faces


def sliding(image):
    out = []
    for y in range(0, 48, 6):
        for x in range(0, 48, 6):
            try:
                out.extend(hog(image[y:y + 24, x:x + 24], orientations=8, pixels_per_cell=(8, 8), cells_per_block=(1, 1)))
            except ValueError:
                pass
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--faces", type=int, default=1000)
    p.add_argument("--model", default=MODEL)
    a = p.parse_args()
    faces = training_faces(a.data, a.faces)
    predictor = dlib.shape_predictor(a.model)
    box = dlib.rectangle(1, 1, 47, 47)

    def timed(fn):
        started = time.perf_counter()
        for face in faces:
            fn(face)
        return time.perf_counter() - started

    t_landmarks = timed(lambda face: [(p.x, p.y) for p in predictor(face, box).parts()])
    t_sliding = timed(sliding)
    t_whole = timed(lambda face: hog(face, orientations=8, pixels_per_cell=(16, 16), cells_per_block=(1, 1)))
    total = t_landmarks + t_sliding + t_whole
    print(json.dumps({
        "implementation": f"python dlib {dlib.__version__} + scikit-image",
        "faces": len(faces),
        "landmarks_seconds": t_landmarks,
        "sliding_hog_seconds": t_sliding,
        "whole_hog_seconds": t_whole,
        "faces_per_second": len(faces) / total,
    }))


if __name__ == "__main__":
    main()
