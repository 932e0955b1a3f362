package all

import _ "github.com/tagpipe/tagpipe/outputs/file" // register outputs.file
