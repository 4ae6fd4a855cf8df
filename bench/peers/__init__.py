"""The tools a user might pick instead of this service, set up as their docs recommend, each
in a small module of its own: ``apscheduler3`` (B3-peer, B3-capacity) and ``pgqueuer_drain``
(B5-peer). They are installed by the ``bench`` extra (``pip install -e '.[bench]'``)."""
