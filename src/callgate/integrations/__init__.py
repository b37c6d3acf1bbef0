"""Adapters that put the gate where agent workers live (optional extras).

``callgate.integrations.livekit`` (``pip install 'callgate[livekit]'``) gates LiveKit Agents
jobs; ``callgate.integrations.pipecat`` (``pip install 'callgate[pipecat]'``) gates a pipecat
pipeline's run. Both are thin: they turn the framework's lifecycle into the client's
``call``/``adopt`` (acquire, heartbeat, release exactly once) and hold no policy.
"""
