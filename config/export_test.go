package config

// PieceSize is how many elements of an array of tables one piece holds (pieces.go).
var PieceSize = &pieceSize

// PiecesRead returns how many tables were read in pieces so far.
func PiecesRead() int64 { return piecesRead.Load() }
