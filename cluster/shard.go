package cluster

import (
	"crypto/sha256"
	"encoding/binary"
)

// Shard returns the shard of a unit: the first 8 bytes of the SHA-256 of its identity (its
// connection's address), read big-endian, modulo shards.
//
// The shard depends on the unit's own identity and the number of shards only, never on the
// other units or their order, so adding or removing a device moves no other device. SHA-256
// rather than a faster hash: it is computed once per unit when the configuration is loaded
// (10,000 units take a few milliseconds), it spreads addresses that differ in one digit evenly
// (FNV-1a modulo a power of two looks only at the low bits of each byte), and any language can
// compute it from the docs to predict where a device goes.
func Shard(unit string, shards int) int {
	if shards <= 1 {
		return 0
	}
	sum := sha256.Sum256([]byte(unit))
	return int(binary.BigEndian.Uint64(sum[:8]) % uint64(shards))
}

// Topic is the membership topic of a group: a topic of `shards` partitions that nothing is
// written to; its partitions are the shards that the group's consumers are assigned. The group
// name is checked by the config loader to make a valid topic name.
func Topic(group string) string { return "tagpipe.cluster." + group }
