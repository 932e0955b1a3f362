package opcua

import (
	"os"
	"strings"
	"testing"
)

// The README repeats the sample config, and every complete example in it loads.
func TestREADME(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	if !strings.Contains(readme, "```toml\n"+sampleConfig+"```") {
		t.Fatal("README.md does not repeat sample.conf verbatim in a toml block")
	}
	blocks := 0
	for _, part := range strings.Split(readme, "```toml\n")[1:] {
		block := part[:strings.Index(part, "```")]
		if !strings.HasPrefix(block, "[[inputs.opcua]]") && !strings.HasPrefix(block, "# ") {
			continue // a fragment
		}
		blocks++
		t.Run(strings.SplitN(block, "\n", 3)[1], func(t *testing.T) { load(t, block) })
	}
	if blocks < 5 {
		t.Fatalf("%d complete examples, want the sample and the four security examples", blocks)
	}
}
