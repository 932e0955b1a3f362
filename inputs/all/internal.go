package all

import _ "github.com/tagpipe/tagpipe/inputs/internal" // register inputs.internal
