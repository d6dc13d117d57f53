"""Files in and out: video frames, label PNGs, COCO RLE, results JSON, overlay video."""
