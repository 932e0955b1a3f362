// Package reliability holds the tests of issue 18 ("nothing lost, nothing hidden"). They probe
// the agent from outside: outputs that misbehave (413s, repeated errors), files planted in the
// agent's folders, hostile configurations (the tagpipe binary on them), and the soak run with
// outages and SIGKILLs. README.md lists every item of the issue and the test that covers it.
// They run against real peers where one exists (InfluxDB 1.x with a small max-body-size) and
// small test servers where no real server misbehaves that way.
package reliability
