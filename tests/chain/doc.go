// Package chain holds no code: its test runs the agent with processors.predict,
// processors.ratelimit and processors.dedup chained, fed a recorded link degradation and a
// value series, and checks what comes out of the output.
package chain
