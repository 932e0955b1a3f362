package all

import _ "github.com/tagpipe/tagpipe/outputs/kafka" // register outputs.kafka
