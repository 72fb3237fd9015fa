"""Camera sites to run camwatch against: test and demo tooling, not part of what runs on a gateway.

The live camera lab (`camwatch lab`, `lab.py`): network namespaces with simulated cameras serving real
RTSP/H.264 (`video.py`, `rtsp_server.py`), vendor personas (`camera.py`), a recorder, an office PC, gateway
and internet services (`services.py`) and WebRTC cloud live view (`webrtc.py`); its packages come with the
`lab` extra (`pip install 'camwatch[lab]'`). And the synthetic site capture: frame builders (`synth.py`,
`payloads.py`, `h264.py`) and scenarios (`scenario.py`, `personas.py`) for the replay demo, tests and
benchmarks, on camwatch's core dependencies only.

The package sits beside `agents/` and `monitor/`, which never import it (`tests/test_layout.py`) except the
`camwatch lab` subcommand, lazily.
"""
