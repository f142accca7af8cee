"""Model code of a YOLO-style fork, as such repos lay it out (test data for ca-export)."""
