"""Camera sites to run camwatch against.

The live camera lab (`camwatch lab`, `lab.py`): network namespaces with simulated cameras serving real
RTSP/H.264 (`video.py`, `rtsp_server.py`), vendor personas (`camera.py`), a recorder, an office PC, gateway
and internet services (`services.py`) and WebRTC cloud live view (`webrtc.py`). And the synthetic site
capture: frame builders (`synth.py`, `payloads.py`) and scenarios (`scenario.py`, `personas.py`) for the
replay demo, tests and benchmarks.
"""
