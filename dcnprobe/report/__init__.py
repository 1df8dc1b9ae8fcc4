"""Reports: Markdown and self-contained HTML with plots."""
