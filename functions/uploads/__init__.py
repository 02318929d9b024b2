"""Uploads: presigned PUT URLs for long prompts and input images, under the caller's own prefix."""
