"""TalkingHead: a reference portrait plus driving audio in, an mp4 of that face speaking out."""
