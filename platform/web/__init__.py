"""The web chat UI: plain HTML, JS and CSS shipped as package data (no build step)."""
