package all

import _ "github.com/tagpipe/tagpipe/processors/ratelimit" // register processors.ratelimit
