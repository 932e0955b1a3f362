// Package devicepage holds no code: its tests run the agent against simulated Modbus devices
// (internal/sim/modbussim) that answer, refuse, never answer or are switched off during the
// test, and check the device page's JSON API against what the simulators did, and the page
// itself in Debian's chromium (driven by chromedp).
package devicepage
