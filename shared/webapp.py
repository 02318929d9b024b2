"""The web app's security headers, one definition for CloudFront (infra/webapp.py) and the local stack.

The page loads only its own files: scripts and styles from its origin (no inline code, no eval), images from
its origin and the results bucket (presigned GETs), and it talks to its origin (config.json), the API and the
uploads bucket (presigned PUTs). Nothing else: no CDN, no fonts, no frames, no plugins.
"""

from __future__ import annotations

from collections.abc import Iterable

CONFIG_FILE = "config.json"
HSTS_MAX_AGE_S = 2 * 365 * 24 * 3600
REFERRER_POLICY = "no-referrer"
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"


def content_security_policy(connect_origins: Iterable[str], image_origins: Iterable[str]) -> str:
    """A strict CSP: 'self' for everything the page needs, plus the given origins for API calls and images."""
    connect = " ".join(["'self'", *connect_origins])
    images = " ".join(["'self'", "blob:", *image_origins])
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {images}",
            f"connect-src {connect}",
            "manifest-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
            "object-src 'none'",
            "require-trusted-types-for 'script'",
        )
    )
