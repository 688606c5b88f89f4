"""Detection / instance-level ops in plain PyTorch (no torchvision, no compiled extensions):
RoIAlign (single and multi-level), NMS, box utilities and coders, focal / IoU losses, and RoI
label-map cropping / RoI-map pasting."""

from .boxes import (
    BoxCoder,
    box_area,
    box_iou,
    clip_boxes,
    generalized_box_iou,
    ltrb_decode,
    ltrb_encode,
)
from .crop_resize import crop_and_resize_labels, paste_roi_maps
from .losses import giou_loss, iou_loss, sigmoid_focal_loss
from .nms import batched_nms, nms
from .roi_align import assign_fpn_levels, max_roi_align, multilevel_roi_align, roi_align

__all__ = [
    "BoxCoder", "assign_fpn_levels", "batched_nms", "box_area", "box_iou", "clip_boxes", "crop_and_resize_labels",
    "generalized_box_iou", "giou_loss", "iou_loss", "ltrb_decode", "ltrb_encode", "max_roi_align",
    "multilevel_roi_align", "nms", "paste_roi_maps", "roi_align", "sigmoid_focal_loss",
]
