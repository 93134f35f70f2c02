"""The captioner's chat text and folder marker, shared by the captioner (``models.captioner``) and its tiny
random build (``models.captioner_tiny``)."""

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")  # Qwen2.5-VL's chat and vision markers
SYSTEM_PROMPT = (
    "You are a film-language video captioner. Describe the video as one JSON object: subjects (type, "
    "sub_type, appearance, action, expression, position, is_main_subject), shot_type, shot_angle, "
    "shot_position, camera_motion (6DoF signs and speed), environment and lighting.")
USER_PROMPT = "Caption this video."
MARKER = "captioner.json"  # written last into a tiny build: its presence marks a complete folder
