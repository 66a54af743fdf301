"""Audio runtimes: Whisper on CTranslate2 (speech to text), espeak-ng (text to speech),
and the PyAV codec both sides of them share."""
