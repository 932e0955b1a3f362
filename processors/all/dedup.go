package all

import _ "github.com/tagpipe/tagpipe/processors/dedup" // register processors.dedup
