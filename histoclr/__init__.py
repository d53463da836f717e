"""histoclr: SimCLR on whole-slide images, then label-efficient segmentation."""
__version__ = "0.1.0"
