// Package reliability holds no code: its tests probe the agent from outside as issue 18 did,
// with hostile configurations, devices, buffers and outputs, each checking what must hold.
package reliability
