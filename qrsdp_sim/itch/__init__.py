"""NASDAQ TotalView-ITCH 5.0 feed: encoder, MoldUDP64 transport, streamer, listener, file export.

See docs/itch-feed.md.
"""
