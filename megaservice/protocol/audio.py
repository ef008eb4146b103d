"""The audio chat, transcription and speech APIs (names and fields as in OPEA's `api_protocol`)."""

from pydantic import BaseModel, NonNegativeFloat, PositiveInt

from megaservice.protocol.openai import Messages, Tokens

__all__ = [
    "AudioChatCompletionRequest",
    "AudioSpeechRequest",
    "AudioTranscriptionResponse",
]


class AudioChatCompletionRequest(BaseModel):
    """Spoken-question chat request."""

    audio: str
    voice: str = "default"
    messages: Messages | None = None
    model: str | None = "Intel/neural-chat-7b-v3-3"
    temperature: NonNegativeFloat | None = 0.01
    top_p: NonNegativeFloat | None = 0.95
    top_k: PositiveInt | None = 10
    n: PositiveInt | None = 1
    max_tokens: Tokens = 1024
    stop: str | list[str] | None = None
    stream: bool | None = False
    presence_penalty: NonNegativeFloat | None = 0.0
    frequency_penalty: NonNegativeFloat | None = 0.0
    repetition_penalty: NonNegativeFloat | None = 1.03
    user: str | None = None


class AudioTranscriptionResponse(BaseModel):
    """Text of a transcription."""

    text: str


class AudioSpeechRequest(BaseModel):
    """Text-to-speech request."""

    input: str
    model: str | None = "microsoft/speecht5_tts"
    voice: str | None = "default"
    response_format: str | None = "mp3"
    speed: NonNegativeFloat | None = 1.0
